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
    bytes32 internal constant LOG = keccak256("log-1"); // the node's name for its log
    bytes32 internal logId; // where NODE anchors LOG
    bytes32 internal constant MEAS = keccak256("measurement");
    bytes32 internal constant GOV_ROLE = keccak256("GOVERNANCE_ROLE");

    function setUp() public {
        ctl = new CampaignController(GOV, GUARD);
        vm.startPrank(GOV);
        ctl.registerCampaign(C1, keccak256("config"), "ipfs://config");
        ctl.setMeasurement(MEAS, true);
        ctl.approveNode(NODE, MEAS);
        vm.stopPrank();
        logId = ctl.logIdOf(NODE, LOG);
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

    function _anchor(uint64 size, bytes32 root, bytes32 prev) internal {
        vm.prank(NODE);
        ctl.anchorLogRoot(LOG, size, root, prev);
    }

    function test_fork_records_lineage_starts_paused_and_pauses_parent() public {
        bytes32 child = keccak256("child");
        _anchor(42, keccak256("root"), bytes32(0));
        vm.prank(GOV);
        ctl.forkCampaign(C1, child, logId, 42, keccak256("root"), keccak256("cfg2"), "ipfs://cfg2", true);
        CampaignController.Campaign memory c = ctl.campaign(child);
        assertEqB(c.parent, C1, "parent");
        assertEqB(c.forkLogId, logId, "log id");
        assertEqU(c.forkTreeSize, 42, "tree size");
        assertEqB(c.forkCheckpointRoot, keccak256("root"), "root");
        assertEqB(c.configHash, keccak256("cfg2"), "config hash");
        assertEqU(c.epoch, 1, "child epoch");
        assertEqU(_status(child), uint256(CampaignController.Status.Paused), "child starts paused");
        assertEqU(_status(C1), uint256(CampaignController.Status.Paused), "parent paused");
        assertEqU(ctl.campaign(C1).epoch, 2, "parent epoch");
        vm.prank(GUARD);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, GUARD, GOV_ROLE
            )
        );
        ctl.resumeCampaign(child);
        vm.prank(GOV);
        ctl.resumeCampaign(child);
        assertEqU(_status(child), uint256(CampaignController.Status.Active), "child resumed");
        assertEqU(ctl.campaign(child).epoch, 2, "resume is the child's epoch 2");
    }

    function test_fork_can_leave_parent_running() public {
        bytes32 child = keccak256("child");
        _anchor(7, keccak256("root"), bytes32(0));
        vm.prank(GOV);
        ctl.forkCampaign(C1, child, logId, 7, keccak256("root"), keccak256("cfg2"), "", false);
        assertEqU(_status(C1), uint256(CampaignController.Status.Active), "parent active");
        assertEqU(ctl.campaign(C1).epoch, 1, "parent epoch unchanged");
        assertEqU(_status(child), uint256(CampaignController.Status.Paused), "child paused");
    }

    function test_fork_of_a_paused_parent_starts_paused_too() public {
        vm.prank(GUARD);
        ctl.pauseCampaign(C1);
        _anchor(7, keccak256("root"), bytes32(0));
        vm.prank(GOV);
        ctl.forkCampaign(C1, keccak256("child"), logId, 7, keccak256("root"), bytes32(0), "", false);
        assertEqU(_status(keccak256("child")), uint256(CampaignController.Status.Paused), "child paused");
        assertEqU(_status(C1), uint256(CampaignController.Status.Paused), "parent still paused");
    }

    function test_fork_needs_the_root_anchored_for_that_log_and_size() public {
        bytes32 child = keccak256("child");
        _anchor(7, keccak256("root"), bytes32(0));
        vm.startPrank(GOV);
        // Never anchored at that size:
        vm.expectRevert(
            abi.encodeWithSelector(
                CampaignController.CheckpointNotAnchored.selector, logId, 8, keccak256("root"), bytes32(0)
            )
        );
        ctl.forkCampaign(C1, child, logId, 8, keccak256("root"), bytes32(0), "", false);
        // Another root than the one anchored:
        vm.expectRevert(
            abi.encodeWithSelector(
                CampaignController.CheckpointNotAnchored.selector, logId, 7, keccak256("other"), keccak256("root")
            )
        );
        ctl.forkCampaign(C1, child, logId, 7, keccak256("other"), bytes32(0), "", false);
        // The right root, but named under another log:
        bytes32 elsewhere = ctl.logIdOf(OTHER, LOG);
        vm.expectRevert(
            abi.encodeWithSelector(
                CampaignController.CheckpointNotAnchored.selector, elsewhere, 7, keccak256("root"), bytes32(0)
            )
        );
        ctl.forkCampaign(C1, child, elsewhere, 7, keccak256("root"), bytes32(0), "", false);
        // A zero root is never anchored (zero reads as "none"):
        vm.expectRevert(
            abi.encodeWithSelector(CampaignController.CheckpointNotAnchored.selector, logId, 1, bytes32(0), bytes32(0))
        );
        ctl.forkCampaign(C1, child, logId, 1, bytes32(0), bytes32(0), "", false);
        vm.stopPrank();
    }

    function test_fork_rejects_existing_child_and_unknown_parent() public {
        _anchor(1, keccak256("r1"), bytes32(0));
        vm.startPrank(GOV);
        ctl.registerCampaign(keccak256("c2"), bytes32(0), "");
        vm.expectRevert(abi.encodeWithSelector(CampaignController.CampaignExists.selector, C1));
        ctl.forkCampaign(keccak256("c2"), C1, logId, 1, keccak256("r1"), bytes32(0), "", false);
        vm.stopPrank();
        vm.prank(GOV);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.UnknownCampaign.selector, keccak256("nope")));
        ctl.forkCampaign(keccak256("nope"), keccak256("y"), logId, 1, keccak256("r1"), bytes32(0), "", false);
    }

    function test_anchors_chain_and_tree_sizes_strictly_grow() public {
        _anchor(10, keccak256("r10"), bytes32(0));
        _anchor(20, keccak256("r20"), keccak256("r10"));
        vm.startPrank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.TreeSizeNotGrowing.selector, logId, 20, 20));
        ctl.anchorLogRoot(LOG, 20, keccak256("again"), keccak256("r20"));
        vm.expectRevert(abi.encodeWithSelector(CampaignController.TreeSizeNotGrowing.selector, logId, 20, 15));
        ctl.anchorLogRoot(LOG, 15, keccak256("older"), keccak256("r10"));
        vm.stopPrank();
        (address owner, uint64 size, bytes32 root) = ctl.logHead(logId);
        assertTrue(owner == NODE, "owner");
        assertEqU(size, 20, "head size");
        assertEqB(root, keccak256("r20"), "head root");
    }

    function test_each_anchor_names_the_root_it_extends() public {
        vm.startPrank(NODE);
        // The first anchor of a log extends nothing:
        vm.expectRevert(
            abi.encodeWithSelector(
                CampaignController.PreviousRootMismatch.selector, logId, 0, bytes32(0), keccak256("r0")
            )
        );
        ctl.anchorLogRoot(LOG, 10, keccak256("r10"), keccak256("r0"));
        ctl.anchorLogRoot(LOG, 10, keccak256("r10"), bytes32(0));
        // A later one extends the last anchored root, not an older or invented one:
        vm.expectRevert(
            abi.encodeWithSelector(
                CampaignController.PreviousRootMismatch.selector, logId, 10, keccak256("r10"), bytes32(0)
            )
        );
        ctl.anchorLogRoot(LOG, 20, keccak256("r20"), bytes32(0));
        ctl.anchorLogRoot(LOG, 20, keccak256("r20"), keccak256("r10"));
        vm.expectRevert(abi.encodeWithSelector(CampaignController.InvalidArgument.selector, "root is zero"));
        ctl.anchorLogRoot(LOG, 30, bytes32(0), keccak256("r20"));
        vm.stopPrank();
    }

    function test_every_anchored_root_stays_readable() public {
        _anchor(10, keccak256("r10"), bytes32(0));
        _anchor(20, keccak256("r20"), keccak256("r10"));
        _anchor(35, keccak256("r35"), keccak256("r20"));
        assertEqB(ctl.anchoredRoot(logId, 10), keccak256("r10"), "size 10");
        assertEqB(ctl.anchoredRoot(logId, 20), keccak256("r20"), "size 20");
        assertEqB(ctl.anchoredRoot(logId, 35), keccak256("r35"), "size 35");
        assertEqB(ctl.anchoredRoot(logId, 30), bytes32(0), "never anchored");
        assertEqB(ctl.anchoredRoot(ctl.logIdOf(OTHER, LOG), 10), bytes32(0), "another node's log");
    }

    function test_anchor_needs_an_approved_node() public {
        vm.prank(OTHER);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeNotApproved.selector, OTHER));
        ctl.anchorLogRoot(LOG, 1, keccak256("r"), bytes32(0));
    }

    function test_a_squatter_cannot_take_or_block_a_nodes_log() public {
        vm.prank(GOV);
        ctl.approveNode(OTHER, bytes32(0));
        // OTHER anchors under NODE's log name first, even at a larger size...
        vm.prank(OTHER);
        ctl.anchorLogRoot(LOG, 1000, keccak256("junk"), bytes32(0));
        // ...which lands in OTHER's own log, never in NODE's:
        assertEqB(ctl.anchoredRoot(logId, 1000), bytes32(0), "node's log untouched");
        (address owner, uint64 size,) = ctl.logHead(logId);
        assertTrue(owner == address(0) && size == 0, "node's log still empty");
        _anchor(5, keccak256("r5"), bytes32(0));
        assertEqB(ctl.anchoredRoot(logId, 5), keccak256("r5"), "node anchors its own log");
        (owner,,) = ctl.logHead(ctl.logIdOf(OTHER, LOG));
        assertTrue(owner == OTHER, "the squatter's anchors are its own log");
    }

    function test_log_ids_are_bound_to_the_anchoring_address() public view {
        assertEqB(ctl.logIdOf(NODE, LOG), keccak256(abi.encode(NODE, LOG)), "derivation");
        assertTrue(ctl.logIdOf(NODE, LOG) != ctl.logIdOf(OTHER, LOG), "one id per address");
    }

    function test_revoked_node_cannot_anchor() public {
        vm.prank(GUARD);
        ctl.revokeNode(NODE);
        vm.prank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeNotApproved.selector, NODE));
        ctl.anchorLogRoot(LOG, 1, keccak256("r"), bytes32(0));
    }

    function test_removing_a_measurement_suspends_its_nodes_until_approved_again() public {
        vm.prank(GOV);
        ctl.setMeasurement(MEAS, false);
        assertTrue(ctl.nodeApproved(NODE) && !ctl.isNodeActive(NODE), "suspended, not revoked");
        vm.startPrank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeSuspended.selector, NODE, MEAS));
        ctl.anchorLogRoot(LOG, 1, keccak256("r"), bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeSuspended.selector, NODE, MEAS));
        ctl.acknowledge(C1, 1, keccak256("entry"));
        vm.stopPrank();
        // Approving the measurement again does not revive nodes approved under it before:
        vm.prank(GOV);
        ctl.setMeasurement(MEAS, true);
        assertTrue(!ctl.isNodeActive(NODE), "still suspended");
        vm.prank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeSuspended.selector, NODE, MEAS));
        ctl.anchorLogRoot(LOG, 1, keccak256("r"), bytes32(0));
        // Governance approves the node again, under an approved measurement:
        bytes32 newer = keccak256("measurement v2");
        vm.startPrank(GOV);
        ctl.setMeasurement(newer, true);
        ctl.approveNode(NODE, newer);
        vm.stopPrank();
        assertTrue(ctl.isNodeActive(NODE), "active again");
        vm.prank(NODE);
        ctl.anchorLogRoot(LOG, 1, keccak256("r"), bytes32(0));
    }

    function test_removing_one_measurement_leaves_other_nodes_alone() public {
        vm.startPrank(GOV);
        ctl.approveNode(OTHER, bytes32(0));
        ctl.setMeasurement(keccak256("another"), true);
        ctl.setMeasurement(keccak256("another"), false);
        vm.stopPrank();
        assertTrue(ctl.isNodeActive(NODE) && ctl.isNodeActive(OTHER), "both active");
        vm.prank(GOV);
        ctl.setMeasurement(MEAS, false);
        assertTrue(!ctl.isNodeActive(NODE) && ctl.isNodeActive(OTHER), "no-TEE node unaffected");
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
        ctl.acknowledge(C1, 1, keccak256("entry"));
        ctl.acknowledge(C1, 2, keccak256("entry"));
        assertEqU(ctl.acknowledgedEpoch(C1, NODE), 2, "acknowledged");
        vm.expectRevert(abi.encodeWithSelector(CampaignController.EpochAlreadyAcknowledged.selector, C1, 2, 2));
        ctl.acknowledge(C1, 2, keccak256("entry"));
        vm.stopPrank();
    }

    function test_acknowledgements_take_the_next_epoch_without_skipping() public {
        vm.prank(GUARD);
        ctl.pauseCampaign(C1);
        vm.prank(GOV);
        ctl.resumeCampaign(C1);
        vm.startPrank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.EpochSkipped.selector, C1, 3, 1));
        ctl.acknowledge(C1, 3, keccak256("entry"));
        ctl.acknowledge(C1, 1, keccak256("entry"));
        vm.expectRevert(abi.encodeWithSelector(CampaignController.EpochSkipped.selector, C1, 3, 2));
        ctl.acknowledge(C1, 3, keccak256("entry"));
        ctl.acknowledge(C1, 2, keccak256("entry"));
        ctl.acknowledge(C1, 3, keccak256("entry"));
        vm.stopPrank();
        assertEqU(ctl.acknowledgedEpoch(C1, NODE), 3, "all three, in order");
    }

    // ---- the node directory

    function _entries() internal view returns (CampaignController.NodeEntry[] memory) {
        return ctl.directory();
    }

    /// NODE and OTHER, both approved, each publish an entry under LOG.
    function _publishBoth() internal {
        vm.prank(GOV);
        ctl.approveNode(OTHER, bytes32(0));
        vm.prank(NODE);
        ctl.publishNode("https://node.example", LOG);
        vm.prank(OTHER);
        ctl.publishNode("https://other.example", LOG);
    }

    function test_an_active_node_publishes_its_endpoint_and_log() public {
        vm.prank(NODE);
        ctl.publishNode("https://node.example:8000", LOG);
        CampaignController.NodeEntry memory e = ctl.nodeEntry(NODE);
        assertTrue(e.node == NODE, "entry's node");
        assertTrue(keccak256(bytes(e.endpoint)) == keccak256("https://node.example:8000"), "endpoint");
        assertEqB(e.logId, logId, "log id bound to the node");
        CampaignController.NodeEntry[] memory listed = _entries();
        assertEqU(listed.length, 1, "listed");
        assertTrue(listed[0].node == NODE, "listed node");
        assertEqU(ctl.publishedCount(), 1, "published once");
    }

    function test_publishing_needs_an_approved_node() public {
        vm.prank(OTHER);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeNotApproved.selector, OTHER));
        ctl.publishNode("https://other.example", LOG);
        vm.prank(GUARD);
        ctl.revokeNode(NODE);
        vm.prank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeNotApproved.selector, NODE));
        ctl.publishNode("https://node.example", LOG);
        assertEqU(ctl.publishedCount(), 0, "nothing published");
    }

    function test_a_suspended_node_cannot_publish_and_drops_out() public {
        vm.prank(NODE);
        ctl.publishNode("https://node.example", LOG);
        vm.prank(GOV);
        ctl.setMeasurement(MEAS, false);
        vm.prank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.NodeSuspended.selector, NODE, MEAS));
        ctl.publishNode("https://elsewhere.example", LOG);
        assertEqU(_entries().length, 0, "a suspended node is not listed");
        assertTrue(ctl.nodeEntry(NODE).node == NODE, "its entry is kept");
    }

    function test_republishing_replaces_only_the_senders_entry() public {
        _publishBoth();
        vm.prank(NODE);
        ctl.publishNode("https://node.example:9000", keccak256("log-2"));
        assertEqU(ctl.publishedCount(), 2, "each node listed once");
        CampaignController.NodeEntry[] memory listed = _entries();
        assertEqU(listed.length, 2, "both listed");
        assertTrue(listed[0].node == NODE && listed[1].node == OTHER, "in publishing order");
        assertTrue(keccak256(bytes(listed[0].endpoint)) == keccak256("https://node.example:9000"), "new");
        assertEqB(listed[0].logId, ctl.logIdOf(NODE, keccak256("log-2")), "new log id");
        assertTrue(keccak256(bytes(listed[1].endpoint)) == keccak256("https://other.example"), "kept");
        assertEqB(listed[1].logId, ctl.logIdOf(OTHER, LOG), "the other's own log id");
    }

    function test_a_revoked_node_disappears_from_the_directory() public {
        _publishBoth();
        vm.prank(GUARD);
        ctl.revokeNode(NODE);
        CampaignController.NodeEntry[] memory listed = _entries();
        assertEqU(listed.length, 1, "one left");
        assertTrue(listed[0].node == OTHER, "the active one");
        // Approved again, it is listed again under the entry it published:
        vm.prank(GOV);
        ctl.approveNode(NODE, bytes32(0));
        assertEqU(_entries().length, 2, "listed again");
        assertEqU(ctl.publishedCount(), 2, "still listed once");
    }

    function test_bad_endpoints_and_a_zero_log_name_are_refused() public {
        bytes memory tooLong = new bytes(ctl.MAX_ENDPOINT_BYTES() + 1);
        for (uint256 i = 0; i < tooLong.length; i++) {
            tooLong[i] = "a";
        }
        vm.startPrank(NODE);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.InvalidArgument.selector, "endpoint is empty"));
        ctl.publishNode("", LOG);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.InvalidArgument.selector, "endpoint is too long"));
        ctl.publishNode(string(tooLong), LOG);
        vm.expectRevert(abi.encodeWithSelector(CampaignController.InvalidArgument.selector, "log name is zero"));
        ctl.publishNode("https://node.example", bytes32(0));
        bytes memory longest = new bytes(ctl.MAX_ENDPOINT_BYTES());
        for (uint256 i = 0; i < longest.length; i++) {
            longest[i] = "a";
        }
        ctl.publishNode(string(longest), LOG);
        vm.stopPrank();
        assertEqU(bytes(ctl.nodeEntry(NODE).endpoint).length, ctl.MAX_ENDPOINT_BYTES(), "the longest fits");
    }
}
