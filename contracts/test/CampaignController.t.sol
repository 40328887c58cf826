// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {CampaignController} from "../src/CampaignController.sol";
import {TestBase} from "./Cheats.sol";

contract CampaignControllerTest is TestBase {
    CampaignController internal ctl;
    address internal constant GOV = address(0xA11CE);
    address internal constant GUARD = address(0x6A4D);
    address internal constant NODE = address(0xB0B);
    address internal constant OTHER = address(0xE5E);
    bytes32 internal constant C1 = keccak256("campaign-1");
    bytes32 internal constant LOG = keccak256("log-1");
    bytes32 internal constant MEAS = keccak256("measurement");
    bytes32 internal constant GOV_ROLE = keccak256("GOVERNANCE_ROLE");

    function setUp() public {
        ctl = new CampaignController(GOV, GUARD);
        vm.startPrank(GOV);
        ctl.registerCampaign(C1, keccak256("config"), "ipfs://config");
        ctl.setMeasurement(MEAS, true);
        ctl.approveNode(NODE, MEAS);
        vm.stopPrank();
    }

    function _status(bytes32 id) internal view returns (uint256) {
        return uint256(ctl.effectiveStatus(id));
    }

    function test_register_starts_active_at_epoch_one() public view {
        assertEqU(_status(C1), uint256(CampaignController.Status.Active), "status");
        assertEqU(ctl.campaign(C1).epoch, 1, "epoch");
    }

    function test_only_governance_registers() public {
        vm.prank(GUARD);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, GUARD, GOV_ROLE
            )
        );
        ctl.registerCampaign(keccak256("c2"), bytes32(0), "");
    }

    function test_each_directive_bumps_epoch() public {
        vm.prank(GUARD);
        ctl.pauseCampaign(C1);
        assertEqU(ctl.campaign(C1).epoch, 2, "after pause");
        vm.prank(GOV);
        ctl.resumeCampaign(C1);
        assertEqU(ctl.campaign(C1).epoch, 3, "after resume");
        vm.prank(GOV);
        ctl.stopCampaign(C1);
        assertEqU(ctl.campaign(C1).epoch, 4, "after stop");
        assertEqU(_status(C1), uint256(CampaignController.Status.Stopped), "stopped");
    }

    function test_guardian_pauses_but_cannot_resume() public {
        vm.prank(GUARD);
        ctl.pauseCampaign(C1);
        assertEqU(_status(C1), uint256(CampaignController.Status.Paused), "paused");
        vm.prank(GUARD);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, GUARD, GOV_ROLE
            )
        );
        ctl.resumeCampaign(C1);
    }

    function test_guardian_cannot_lift_global_pause_or_stop() public {
        vm.prank(GUARD);
        ctl.pauseAll();
        assertEqU(_status(C1), uint256(CampaignController.Status.Paused), "globally paused");
        vm.prank(GUARD);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, GUARD, GOV_ROLE
            )
        );
        ctl.unpauseAll();
        vm.prank(GUARD);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, GUARD, GOV_ROLE
            )
        );
        ctl.stopCampaign(C1);
        vm.prank(GOV);
        ctl.unpauseAll();
        assertEqU(_status(C1), uint256(CampaignController.Status.Active), "active again");
    }

    function test_guardian_cannot_approve_nodes() public {
        vm.prank(GUARD);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, GUARD, GOV_ROLE
            )
        );
        ctl.approveNode(OTHER, bytes32(0));
    }

    function test_stranger_cannot_pause() public {
        vm.prank(OTHER);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NotGuardianOrGovernance.selector, OTHER));
        ctl.pauseCampaign(C1);
    }

    function test_global_pause_does_not_revive_stopped_campaign() public {
        vm.prank(GOV);
        ctl.stopCampaign(C1);
        vm.prank(GUARD);
        ctl.pauseAll();
        assertEqU(_status(C1), uint256(CampaignController.Status.Stopped), "stopped wins");
    }

    function test_stopped_campaign_cannot_resume() public {
        vm.prank(GOV);
        ctl.stopCampaign(C1);
        vm.prank(GOV);
        vm.expectRevert(
            abi.encodeWithSelector(
                CampaignController.InvalidTransition.selector,
                C1,
                CampaignController.Status.Stopped,
                CampaignController.Directive.Resume
            )
        );
        ctl.resumeCampaign(C1);
    }

    function test_fork_records_lineage_and_pauses_parent() public {
        bytes32 child = keccak256("child");
        vm.prank(GOV);
        ctl.forkCampaign(C1, child, 42, keccak256("root"), keccak256("cfg2"), "ipfs://cfg2", true);
        CampaignController.Campaign memory c = ctl.campaign(child);
        assertEqB(c.parent, C1, "parent");
        assertEqU(c.forkTreeSize, 42, "tree size");
        assertEqB(c.forkCheckpointRoot, keccak256("root"), "root");
        assertEqB(c.configHash, keccak256("cfg2"), "config hash");
        assertEqU(c.epoch, 1, "child epoch");
        assertEqU(_status(child), uint256(CampaignController.Status.Active), "child active");
        assertEqU(_status(C1), uint256(CampaignController.Status.Paused), "parent paused");
        assertEqU(ctl.campaign(C1).epoch, 2, "parent epoch");
    }

    function test_fork_can_leave_parent_running() public {
        bytes32 child = keccak256("child");
        vm.prank(GOV);
        ctl.forkCampaign(C1, child, 7, keccak256("root"), keccak256("cfg2"), "", false);
        assertEqU(_status(C1), uint256(CampaignController.Status.Active), "parent active");
        assertEqU(ctl.campaign(C1).epoch, 1, "parent epoch unchanged");
    }

    function test_fork_rejects_existing_child_and_unknown_parent() public {
        vm.startPrank(GOV);
        ctl.registerCampaign(keccak256("c2"), bytes32(0), "");
        vm.expectRevert(abi.encodeWithSelector(CampaignController.CampaignExists.selector, C1));
        ctl.forkCampaign(keccak256("c2"), C1, 1, bytes32(0), bytes32(0), "", false);
        vm.stopPrank();
        vm.prank(GOV);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.UnknownCampaign.selector, keccak256("nope")));
        ctl.forkCampaign(keccak256("nope"), keccak256("y"), 1, bytes32(0), bytes32(0), "", false);
    }

    function test_anchor_tree_sizes_only_grow() public {
        vm.startPrank(NODE);
        ctl.anchorLogRoot(LOG, 10, keccak256("r10"));
        ctl.anchorLogRoot(LOG, 20, keccak256("r20"));
        vm.expectRevert(abi.encodeWithSelector(CampaignController.TreeSizeNotGrowing.selector, LOG, 20, 20));
        ctl.anchorLogRoot(LOG, 20, keccak256("again"));
        vm.expectRevert(abi.encodeWithSelector(CampaignController.TreeSizeNotGrowing.selector, LOG, 20, 15));
        ctl.anchorLogRoot(LOG, 15, keccak256("older"));
        vm.stopPrank();
        (address owner, uint64 size) = ctl.logHead(LOG);
        assertTrue(owner == NODE, "owner");
        assertEqU(size, 20, "head size");
    }

    function test_anchor_needs_approved_node_and_own_log() public {
        vm.prank(OTHER);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeNotApproved.selector, OTHER));
        ctl.anchorLogRoot(LOG, 1, keccak256("r"));
        vm.prank(NODE);
        ctl.anchorLogRoot(LOG, 1, keccak256("r"));
        vm.prank(GOV);
        ctl.approveNode(OTHER, bytes32(0));
        vm.prank(OTHER);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.LogOwnedByOtherNode.selector, LOG, NODE));
        ctl.anchorLogRoot(LOG, 2, keccak256("r2"));
    }

    function test_revoked_node_cannot_anchor() public {
        vm.prank(GUARD);
        ctl.revokeNode(NODE);
        vm.prank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeNotApproved.selector, NODE));
        ctl.anchorLogRoot(LOG, 1, keccak256("r"));
    }

    function test_node_approval_needs_approved_measurement() public {
        vm.prank(GOV);
        vm.expectRevert(
            abi.encodeWithSelector(CampaignController.MeasurementNotApproved.selector, keccak256("bad"))
        );
        ctl.approveNode(OTHER, keccak256("bad"));
    }

    function test_acknowledgements_follow_issued_epochs() public {
        vm.prank(GUARD);
        ctl.pauseCampaign(C1);
        vm.startPrank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.EpochNotIssued.selector, C1, 3, 2));
        ctl.acknowledge(C1, 3, keccak256("entry"));
        ctl.acknowledge(C1, 2, keccak256("entry"));
        assertEqU(ctl.acknowledgedEpoch(C1, NODE), 2, "acknowledged");
        vm.expectRevert(abi.encodeWithSelector(CampaignController.EpochAlreadyAcknowledged.selector, C1, 2, 2));
        ctl.acknowledge(C1, 2, keccak256("entry"));
        vm.stopPrank();
    }
}
