// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGovernor} from "@openzeppelin/contracts/governance/IGovernor.sol";
import {CampaignController} from "../src/CampaignController.sol";
import {DaoGovernor} from "../src/DaoGovernor.sol";
import {DaoTimelock} from "../src/DaoTimelock.sol";
import {GovToken} from "../src/GovToken.sol";
import {TestBase} from "./Cheats.sol";

/// The DAO path end to end: a proposal to pause a campaign passes, is queued in the
/// timelock and executed; only then is the campaign paused. The guardian can cancel a
/// queued proposal; a late quorum extends the vote; the clock is blocks or seconds.
contract GovernanceTest is TestBase {
    GovToken internal token;
    DaoTimelock internal timelock;
    DaoGovernor internal governor;
    CampaignController internal ctl;
    bytes32 internal constant C1 = keccak256("campaign-1");
    address internal constant VOTER = address(0xF00D);
    address internal constant SMALL = address(0x5A11);
    address internal constant GUARD = address(0x6A4D);
    uint256 internal constant DELAY = 2 days;
    uint48 internal constant EXTENSION = 5;

    function setUp() public {
        token = _token(false);
        _deploy(1, 20);
    }

    function _token(bool timestampClock) internal returns (GovToken) {
        address[] memory holders = new address[](2);
        uint256[] memory amounts = new uint256[](2);
        (holders[0], amounts[0]) = (VOTER, 960_000 ether);
        (holders[1], amounts[1]) = (SMALL, 40_000 ether);
        return new GovToken("Gov", "GOV", holders, amounts, timestampClock);
    }

    function _deploy(uint48 votingDelay, uint32 votingPeriod) internal {
        address[] memory none = new address[](0);
        address[] memory anyone = new address[](1);
        timelock = new DaoTimelock(DELAY, none, anyone, address(this));
        governor = new DaoGovernor(token, timelock, votingDelay, votingPeriod, 1_000 ether, 4, EXTENSION, GUARD);
        timelock.grantRole(timelock.PROPOSER_ROLE(), address(governor));
        timelock.grantRole(timelock.CANCELLER_ROLE(), address(governor));
        timelock.renounceRole(timelock.DEFAULT_ADMIN_ROLE(), address(this));
        ctl = new CampaignController(address(this), GUARD);
        ctl.registerCampaign(C1, keccak256("cfg"), "");
        ctl.grantRole(ctl.GOVERNANCE_ROLE(), address(timelock));
        ctl.grantRole(ctl.DEFAULT_ADMIN_ROLE(), address(timelock));
        ctl.renounceRole(ctl.GOVERNANCE_ROLE(), address(this));
        ctl.renounceRole(ctl.DEFAULT_ADMIN_ROLE(), address(this));
        vm.prank(VOTER);
        token.delegate(VOTER);
        vm.prank(SMALL);
        token.delegate(SMALL);
        vm.roll(block.number + 1);
        vm.warp(block.timestamp + 1);
    }

    function _pauseProposal()
        internal
        pure
        returns (address[] memory targets, uint256[] memory values, bytes[] memory calldatas)
    {
        targets = new address[](1);
        values = new uint256[](1);
        calldatas = new bytes[](1);
        calldatas[0] = abi.encodeCall(CampaignController.pauseCampaign, (C1));
    }

    function _propose(string memory description) internal returns (uint256 id) {
        (address[] memory targets, uint256[] memory values, bytes[] memory calldatas) = _pauseProposal();
        targets[0] = address(ctl);
        vm.prank(VOTER);
        id = governor.propose(targets, values, calldatas, description);
    }

    function _queue(string memory description) internal returns (uint256 id) {
        id = _propose(description);
        vm.roll(block.number + 2);
        vm.prank(VOTER);
        governor.castVote(id, 1);
        vm.roll(governor.proposalDeadline(id) + 1);
        assertEqU(uint256(governor.state(id)), uint256(IGovernor.ProposalState.Succeeded), "succeeded");
        governor.queue(id);
    }

    function test_passed_proposal_pauses_campaign_through_timelock() public {
        uint256 id = _queue("pause campaign-1");
        assertEqU(uint256(ctl.effectiveStatus(C1)), uint256(CampaignController.Status.Active), "not yet");
        vm.warp(block.timestamp + DELAY + 1);
        governor.execute(id);
        assertEqU(uint256(ctl.effectiveStatus(C1)), uint256(CampaignController.Status.Paused), "paused");
        assertEqU(governor.proposalCount(), 1, "stored proposal");
    }

    function test_guardian_cancels_a_queued_proposal_before_it_executes() public {
        uint256 id = _queue("hostile pause");
        (address[] memory targets, uint256[] memory values, bytes[] memory calldatas) = _pauseProposal();
        targets[0] = address(ctl);
        bytes32 descriptionHash = keccak256(bytes("hostile pause"));
        // Nobody else can: not the proposer once voting opened, not a stranger.
        vm.prank(VOTER);
        vm.expectRevert(abi.encodeWithSelector(IGovernor.GovernorUnableToCancel.selector, id, VOTER));
        governor.cancel(targets, values, calldatas, descriptionHash);
        vm.prank(GUARD);
        governor.cancel(targets, values, calldatas, descriptionHash);
        assertEqU(uint256(governor.state(id)), uint256(IGovernor.ProposalState.Canceled), "canceled");
        vm.warp(block.timestamp + DELAY + 1);
        bytes32 succeededOrQueued = bytes32(
            (1 << uint8(IGovernor.ProposalState.Succeeded)) | (1 << uint8(IGovernor.ProposalState.Queued))
        );
        vm.expectRevert(
            abi.encodeWithSelector(
                IGovernor.GovernorUnexpectedProposalState.selector,
                id,
                IGovernor.ProposalState.Canceled,
                succeededOrQueued
            )
        );
        governor.execute(targets, values, calldatas, descriptionHash);
        assertEqU(uint256(ctl.effectiveStatus(C1)), uint256(CampaignController.Status.Active), "never ran");
    }

    function test_guardian_may_cancel_while_the_vote_is_open() public {
        uint256 id = _propose("cancel me early");
        vm.roll(block.number + 2);
        (address[] memory targets, uint256[] memory values, bytes[] memory calldatas) = _pauseProposal();
        targets[0] = address(ctl);
        vm.prank(GUARD);
        governor.cancel(targets, values, calldatas, keccak256(bytes("cancel me early")));
        assertEqU(uint256(governor.state(id)), uint256(IGovernor.ProposalState.Canceled), "canceled");
        assertTrue(governor.proposalGuardian() == GUARD, "guardian");
    }

    function test_a_late_quorum_extends_the_vote() public {
        uint256 id = _propose("late");
        uint256 deadline = governor.proposalDeadline(id);
        vm.roll(deadline); // the last block of the vote
        vm.prank(VOTER);
        governor.castVote(id, 1);
        assertEqU(governor.proposalDeadline(id), deadline + EXTENSION, "extended");
        vm.roll(deadline + 1);
        assertEqU(uint256(governor.state(id)), uint256(IGovernor.ProposalState.Active), "still open");
    }

    function test_proposals_need_the_threshold() public {
        (address[] memory targets, uint256[] memory values, bytes[] memory calldatas) = _pauseProposal();
        targets[0] = address(ctl);
        address poor = address(0xBEEF);
        vm.prank(poor);
        vm.expectRevert(
            abi.encodeWithSelector(IGovernor.GovernorInsufficientProposerVotes.selector, poor, 0, 1_000 ether)
        );
        governor.propose(targets, values, calldatas, "no votes");
    }

    function test_the_distribution_is_minted_to_its_holders_only() public view {
        assertEqU(token.balanceOf(VOTER), 960_000 ether, "voter");
        assertEqU(token.balanceOf(SMALL), 40_000 ether, "small");
        assertEqU(token.totalSupply(), 1_000_000 ether, "supply");
        assertEqU(token.balanceOf(address(this)), 0, "the deployer holds none");
    }

    function test_a_distribution_with_a_zero_amount_is_refused() public {
        address[] memory holders = new address[](1);
        uint256[] memory amounts = new uint256[](1);
        holders[0] = VOTER;
        vm.expectRevert(abi.encodeWithSelector(GovToken.InvalidDistribution.selector, "an amount is zero"));
        new GovToken("Gov", "GOV", holders, amounts, false);
    }

    function test_the_clock_is_blocks_or_timestamps() public {
        assertTrue(keccak256(bytes(token.CLOCK_MODE())) == keccak256("mode=blocknumber&from=default"), "blocks");
        assertEqU(governor.clock(), block.number, "block clock");
        token = _token(true);
        _deploy(1 days, 7 days);
        assertTrue(keccak256(bytes(governor.CLOCK_MODE())) == keccak256("mode=timestamp"), "timestamps");
        assertEqU(governor.clock(), block.timestamp, "timestamp clock");
        uint256 id = _propose("timed");
        assertEqU(governor.proposalSnapshot(id), block.timestamp + 1 days, "snapshot in seconds");
        assertEqU(governor.proposalDeadline(id), block.timestamp + 8 days, "deadline in seconds");
    }

    function test_deployer_keeps_no_governance_power() public view {
        assertTrue(!ctl.hasRole(ctl.GOVERNANCE_ROLE(), address(this)), "deployer renounced");
        assertTrue(ctl.hasRole(ctl.GOVERNANCE_ROLE(), address(timelock)), "timelock governs");
    }
}
