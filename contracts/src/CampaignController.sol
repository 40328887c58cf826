// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title CampaignController: the directives nodes obey and the log roots they anchor.
/// @notice Roles: governance (the DAO timelock) registers, resumes, stops and forks
/// campaigns, approves TEE measurements and nodes, and lifts a global pause; the guardian
/// pauses a campaign, pauses all, or revokes a node, and can never resume; an approved node
/// anchors its log roots and acknowledges directives. Every directive bumps the campaign's
/// epoch; `effectiveStatus` is what nodes obey.
contract CampaignController is AccessControl {
    bytes32 public constant GOVERNANCE_ROLE = keccak256("GOVERNANCE_ROLE");
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    enum Status {
        None,
        Active,
        Paused,
        Stopped
    }

    enum Directive {
        Register,
        Pause,
        Resume,
        Stop,
        Fork
    }

    struct Campaign {
        Status status;
        uint64 epoch;
        bytes32 configHash;
        bytes32 parent;
        uint64 forkTreeSize;
        bytes32 forkCheckpointRoot;
        string configURI;
    }

    struct LogHead {
        address node;
        uint64 treeSize;
    }

    mapping(bytes32 => Campaign) private _campaigns;
    mapping(bytes32 => bool) public measurementApproved;
    mapping(address => bytes32) public nodeMeasurement;
    mapping(address => bool) public nodeApproved;
    mapping(bytes32 => LogHead) private _logs;
    mapping(bytes32 => mapping(address => uint64)) public acknowledgedEpoch;
    bool public globalPaused;
    uint64 public globalEpoch;

    event DirectiveIssued(
        bytes32 indexed campaignId, uint64 indexed epoch, Directive directive, Status status, address by
    );
    event CampaignRegistered(bytes32 indexed campaignId, bytes32 configHash, string configURI);
    event CampaignForked(
        bytes32 indexed parent,
        bytes32 indexed child,
        uint64 fromTreeSize,
        bytes32 checkpointRoot,
        bytes32 configHash,
        string configURI,
        bool parentPaused
    );
    event GlobalPauseSet(bool paused, uint64 indexed globalEpoch, address by);
    event MeasurementSet(bytes32 indexed measurement, bool approved);
    event NodeApproved(address indexed node, bytes32 indexed measurement);
    event NodeRevoked(address indexed node, address by);
    event LogRootAnchored(bytes32 indexed logId, uint64 indexed treeSize, bytes32 root, address indexed node);
    event DirectiveAcknowledged(
        bytes32 indexed campaignId, uint64 indexed epoch, address indexed node, bytes32 logEntryHash
    );

    error UnknownCampaign(bytes32 campaignId);
    error CampaignExists(bytes32 campaignId);
    error InvalidTransition(bytes32 campaignId, Status from, Directive directive);
    error NotGuardianOrGovernance(address caller);
    error MeasurementNotApproved(bytes32 measurement);
    error NodeNotApproved(address node);
    error TreeSizeNotGrowing(bytes32 logId, uint64 lastTreeSize, uint64 treeSize);
    error LogOwnedByOtherNode(bytes32 logId, address owner);
    error EpochNotIssued(bytes32 campaignId, uint64 epoch, uint64 currentEpoch);
    error EpochAlreadyAcknowledged(bytes32 campaignId, uint64 epoch, uint64 lastAcknowledged);
    error InvalidArgument(string what);

    modifier onlyGuardianOrGovernance() {
        if (!hasRole(GUARDIAN_ROLE, msg.sender) && !hasRole(GOVERNANCE_ROLE, msg.sender)) {
            revert NotGuardianOrGovernance(msg.sender);
        }
        _;
    }

    modifier onlyApprovedNode() {
        if (!nodeApproved[msg.sender]) revert NodeNotApproved(msg.sender);
        _;
    }

    constructor(address governance, address guardian) {
        if (governance == address(0)) revert InvalidArgument("governance is the zero address");
        _grantRole(DEFAULT_ADMIN_ROLE, governance);
        _grantRole(GOVERNANCE_ROLE, governance);
        if (guardian != address(0)) _grantRole(GUARDIAN_ROLE, guardian);
    }

    // ---- campaigns

    function registerCampaign(bytes32 campaignId, bytes32 configHash, string calldata configURI)
        external
        onlyRole(GOVERNANCE_ROLE)
    {
        _create(campaignId, configHash, configURI);
        _issue(campaignId, Directive.Register, Status.Active);
    }

    function pauseCampaign(bytes32 campaignId) external onlyGuardianOrGovernance {
        Campaign storage c = _existing(campaignId);
        if (c.status != Status.Active) revert InvalidTransition(campaignId, c.status, Directive.Pause);
        _issue(campaignId, Directive.Pause, Status.Paused);
    }

    function resumeCampaign(bytes32 campaignId) external onlyRole(GOVERNANCE_ROLE) {
        Campaign storage c = _existing(campaignId);
        if (c.status != Status.Paused) revert InvalidTransition(campaignId, c.status, Directive.Resume);
        _issue(campaignId, Directive.Resume, Status.Active);
    }

    function stopCampaign(bytes32 campaignId) external onlyRole(GOVERNANCE_ROLE) {
        Campaign storage c = _existing(campaignId);
        if (c.status == Status.Stopped) revert InvalidTransition(campaignId, c.status, Directive.Stop);
        _issue(campaignId, Directive.Stop, Status.Stopped);
    }

    /// @notice Starts `child` from `parent`'s state as of log position `fromTreeSize`
    /// (whose checkpoint root is `checkpointRoot`), with a new config.
    function forkCampaign(
        bytes32 parent,
        bytes32 child,
        uint64 fromTreeSize,
        bytes32 checkpointRoot,
        bytes32 configHash,
        string calldata configURI,
        bool pauseParent
    ) external onlyRole(GOVERNANCE_ROLE) {
        Campaign storage p = _existing(parent);
        if (p.status == Status.Stopped) revert InvalidTransition(parent, p.status, Directive.Fork);
        if (parent == child) revert InvalidArgument("child equals parent");
        if (fromTreeSize == 0) revert InvalidArgument("fromTreeSize is zero");
        Campaign storage c = _create(child, configHash, configURI);
        c.parent = parent;
        c.forkTreeSize = fromTreeSize;
        c.forkCheckpointRoot = checkpointRoot;
        bool paused = pauseParent && p.status == Status.Active;
        if (paused) _issue(parent, Directive.Pause, Status.Paused);
        _issue(child, Directive.Fork, Status.Active);
        emit CampaignForked(parent, child, fromTreeSize, checkpointRoot, configHash, configURI, paused);
    }

    function pauseAll() external onlyGuardianOrGovernance {
        if (globalPaused) revert InvalidArgument("already paused globally");
        globalPaused = true;
        globalEpoch += 1;
        emit GlobalPauseSet(true, globalEpoch, msg.sender);
    }

    function unpauseAll() external onlyRole(GOVERNANCE_ROLE) {
        if (!globalPaused) revert InvalidArgument("not paused globally");
        globalPaused = false;
        globalEpoch += 1;
        emit GlobalPauseSet(false, globalEpoch, msg.sender);
    }

    /// @notice What a node must obey: Stopped beats Paused beats Active; a global pause
    /// pauses every campaign that is not stopped.
    function effectiveStatus(bytes32 campaignId) external view returns (Status) {
        Status s = _existing(campaignId).status;
        if (s == Status.Active && globalPaused) return Status.Paused;
        return s;
    }

    function campaign(bytes32 campaignId) external view returns (Campaign memory) {
        return _existing(campaignId);
    }

    // ---- TEE measurements and nodes

    function setMeasurement(bytes32 measurement, bool approved) external onlyRole(GOVERNANCE_ROLE) {
        measurementApproved[measurement] = approved;
        emit MeasurementSet(measurement, approved);
    }

    /// @notice Approves `node`, attested with `measurement` (bytes32(0) for a node without
    /// a TEE, which governance may approve explicitly).
    function approveNode(address node, bytes32 measurement) external onlyRole(GOVERNANCE_ROLE) {
        if (node == address(0)) revert InvalidArgument("node is the zero address");
        if (measurement != bytes32(0) && !measurementApproved[measurement]) {
            revert MeasurementNotApproved(measurement);
        }
        nodeApproved[node] = true;
        nodeMeasurement[node] = measurement;
        emit NodeApproved(node, measurement);
    }

    function revokeNode(address node) external onlyGuardianOrGovernance {
        if (!nodeApproved[node]) revert NodeNotApproved(node);
        nodeApproved[node] = false;
        emit NodeRevoked(node, msg.sender);
    }

    // ---- node duties

    /// @notice Anchors a checkpoint of log `logId`: the root of its first `treeSize` entries.
    /// The first anchor binds the log to its node; tree sizes only grow.
    function anchorLogRoot(bytes32 logId, uint64 treeSize, bytes32 root) external onlyApprovedNode {
        LogHead storage head = _logs[logId];
        if (head.node == address(0)) {
            head.node = msg.sender;
        } else if (head.node != msg.sender) {
            revert LogOwnedByOtherNode(logId, head.node);
        }
        if (treeSize <= head.treeSize) revert TreeSizeNotGrowing(logId, head.treeSize, treeSize);
        head.treeSize = treeSize;
        emit LogRootAnchored(logId, treeSize, root, msg.sender);
    }

    function logHead(bytes32 logId) external view returns (address node, uint64 treeSize) {
        LogHead storage head = _logs[logId];
        return (head.node, head.treeSize);
    }

    /// @notice Records that this node applied the campaign's directive `epoch`, logged as
    /// the entry whose hash is `logEntryHash`.
    function acknowledge(bytes32 campaignId, uint64 epoch, bytes32 logEntryHash) external onlyApprovedNode {
        Campaign storage c = _existing(campaignId);
        if (epoch == 0 || epoch > c.epoch) revert EpochNotIssued(campaignId, epoch, c.epoch);
        uint64 last = acknowledgedEpoch[campaignId][msg.sender];
        if (epoch <= last) revert EpochAlreadyAcknowledged(campaignId, epoch, last);
        acknowledgedEpoch[campaignId][msg.sender] = epoch;
        emit DirectiveAcknowledged(campaignId, epoch, msg.sender, logEntryHash);
    }

    // ---- internals

    function _existing(bytes32 campaignId) private view returns (Campaign storage c) {
        c = _campaigns[campaignId];
        if (c.status == Status.None) revert UnknownCampaign(campaignId);
    }

    function _create(bytes32 campaignId, bytes32 configHash, string calldata configURI)
        private
        returns (Campaign storage c)
    {
        if (campaignId == bytes32(0)) revert InvalidArgument("campaign id is zero");
        c = _campaigns[campaignId];
        if (c.status != Status.None) revert CampaignExists(campaignId);
        c.status = Status.Active;
        c.configHash = configHash;
        c.configURI = configURI;
        emit CampaignRegistered(campaignId, configHash, configURI);
    }

    function _issue(bytes32 campaignId, Directive directive, Status status) private {
        Campaign storage c = _campaigns[campaignId];
        c.status = status;
        c.epoch += 1;
        emit DirectiveIssued(campaignId, c.epoch, directive, status, msg.sender);
    }
}
