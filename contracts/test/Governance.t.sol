// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGovernor} from "@openzeppelin/contracts/governance/IGovernor.sol";
import {CampaignController} from "../src/CampaignController.sol";
import {DaoGovernor} from "../src/DaoGovernor.sol";
import {DaoTimelock} from "../src/DaoTimelock.sol";
import {GovToken} from "../src/GovToken.sol";
import {TestBase} from "./Cheats.sol";

/// The DAO path end to end: a proposal to pause a campaign passes, is queued in the
/// timelock and executed; only then is the campaign paused.
contract GovernanceTest is TestBase {
    GovToken internal token;
    DaoTimelock internal timelock;
    DaoGovernor internal governor;
    CampaignController internal ctl;
    bytes32 internal constant C1 = keccak256("campaign-1");
    address internal constant VOTER = address(0xF00D);

    function setUp() public {
        token = new GovToken("Gov", "GOV", VOTER, 1_000_000 ether);
        address[] memory none = new address[](0);
        address[] memory anyone = new address[](1);
        timelock = new DaoTimelock(60, none, anyone, address(this));
        governor = new DaoGovernor(token, timelock, 1, 20, 4);
        timelock.grantRole(timelock.PROPOSER_ROLE(), address(governor));
        timelock.grantRole(timelock.CANCELLER_ROLE(), address(governor));
        timelock.renounceRole(timelock.DEFAULT_ADMIN_ROLE(), address(this));
        ctl = new CampaignController(address(this), address(0));
        ctl.registerCampaign(C1, keccak256("cfg"), "");
        ctl.grantRole(ctl.GOVERNANCE_ROLE(), address(timelock));
        ctl.grantRole(ctl.DEFAULT_ADMIN_ROLE(), address(timelock));
        ctl.renounceRole(ctl.GOVERNANCE_ROLE(), address(this));
        ctl.renounceRole(ctl.DEFAULT_ADMIN_ROLE(), address(this));
        vm.prank(VOTER);
        token.delegate(VOTER);
        vm.roll(block.number + 1);
    }

    function test_passed_proposal_pauses_campaign_through_timelock() public {
        address[] memory targets = new address[](1);
        targets[0] = address(ctl);
        uint256[] memory values = new uint256[](1);
        bytes[] memory calldatas = new bytes[](1);
        calldatas[0] = abi.encodeCall(CampaignController.pauseCampaign, (C1));
        string memory description = "pause campaign-1";
        vm.prank(VOTER);
        uint256 id = governor.propose(targets, values, calldatas, description);
        vm.roll(block.number + 2);
        vm.prank(VOTER);
        governor.castVote(id, 1);
        vm.roll(block.number + 21);
        assertEqU(uint256(governor.state(id)), uint256(IGovernor.ProposalState.Succeeded), "succeeded");
        governor.queue(id);
        assertEqU(uint256(ctl.effectiveStatus(C1)), uint256(CampaignController.Status.Active), "not yet");
        vm.warp(block.timestamp + 61);
        governor.execute(id);
        assertEqU(uint256(ctl.effectiveStatus(C1)), uint256(CampaignController.Status.Paused), "paused");
        assertEqU(governor.proposalCount(), 1, "stored proposal");
    }

    function test_deployer_keeps_no_governance_power() public view {
        assertTrue(!ctl.hasRole(ctl.GOVERNANCE_ROLE(), address(this)), "deployer renounced");
        assertTrue(ctl.hasRole(ctl.GOVERNANCE_ROLE(), address(timelock)), "timelock governs");
    }
}
