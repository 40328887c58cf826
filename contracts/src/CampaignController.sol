// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title CampaignController: the directives nodes obey and the log roots they anchor.
/// @notice Roles: governance (the DAO timelock) registers, resumes, stops and forks
/// campaigns, approves TEE measurements and nodes, and lifts a global pause; the guardian
/// pauses a campaign, pauses all, or revokes a node, and can never resume; an active node
/// (approved, under a measurement still approved) anchors its log roots and acknowledges
/// directives. Every directive bumps the campaign's epoch; `effectiveStatus` is what nodes
/// obey.
///
/// Logs: a node anchors its log under `logIdOf(node, logName)`, derived from its own
/// address, so no other account can write into (or squat) its log. Each anchor names the
/// root it extends (the log's last anchored root, zero for the first), tree sizes strictly
/// grow, and every anchored root stays readable (`anchoredRoot`).
///
/// Directory: an active node publishes where its API answers and the log it anchors
/// (`publishNode`); `directory()` lists the published nodes that are active now, so a
/// revoked or suspended node drops out of it without anyone editing the list.
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
        bytes32 forkLogId;
        string configURI;
    }

    /// A node's approval. `generation` is its measurement's generation at approval: a
    /// measurement removed (even if approved again later) leaves the node suspended until
    /// governance approves it again.
    struct NodeRecord {
        bytes32 measurement;
        bool approved;
        uint64 generation;
    }

    /// A TEE measurement; `generation` counts its removals.
    struct MeasurementRecord {
        bool approved;
        uint64 generation;
    }

    /// A node's entry in the directory: its API's base URL and the id of the log it
    /// anchors (`logIdOf(node, logName)`). `node` is zero for a node that never published.
    struct NodeEntry {
        address node;
        string endpoint;
        bytes32 logId;
    }

    /// The newest anchor of a log: its tree size (the root is `_roots[logId][treeSize]`).
    struct LogHead {
        address node;
        uint64 treeSize;
    }

    mapping(bytes32 => Campaign) private _campaigns;
    mapping(bytes32 => MeasurementRecord) private _measurements;
    mapping(address => NodeRecord) private _nodes;
    mapping(bytes32 => LogHead) private _logs;
    mapping(bytes32 => mapping(uint64 => bytes32)) private _roots;
    mapping(bytes32 => mapping(address => uint64)) public acknowledgedEpoch;
    mapping(address => NodeEntry) private _entries;
    /// Every node that ever published, in order, each once (revoked ones stay listed;
    /// `directory()` skips them). Only approved nodes publish, so governance bounds it.
    address[] public published;
    bool public globalPaused;
    uint64 public globalEpoch;

    /// The longest endpoint a node may publish, in bytes: a URL, not a document.
    uint256 public constant MAX_ENDPOINT_BYTES = 256;

    event DirectiveIssued(
        bytes32 indexed campaignId, uint64 indexed epoch, Directive directive, Status status, address by
    );
    event CampaignRegistered(bytes32 indexed campaignId, bytes32 configHash, string configURI);
    event CampaignForked(
        bytes32 indexed parent,
        bytes32 indexed child,
        bytes32 logId,
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
    event LogRootAnchored(
        bytes32 indexed logId, bytes32 indexed logName, address indexed node, uint64 treeSize, bytes32 root
    );
    event DirectiveAcknowledged(
        bytes32 indexed campaignId, uint64 indexed epoch, address indexed node, bytes32 logEntryHash
    );
    event NodePublished(address indexed node, string endpoint, bytes32 logId);

    error UnknownCampaign(bytes32 campaignId);
    error CampaignExists(bytes32 campaignId);
    error InvalidTransition(bytes32 campaignId, Status from, Directive directive);
    error NotGuardianOrGovernance(address caller);
    error MeasurementNotApproved(bytes32 measurement);
    error NodeNotApproved(address node);
    error NodeSuspended(address node, bytes32 measurement);
    error TreeSizeNotGrowing(bytes32 logId, uint64 lastTreeSize, uint64 treeSize);
    error PreviousRootMismatch(bytes32 logId, uint64 lastTreeSize, bytes32 lastRoot, bytes32 prevRoot);
    error CheckpointNotAnchored(bytes32 logId, uint64 treeSize, bytes32 checkpointRoot, bytes32 anchoredRoot);
    error EpochNotIssued(bytes32 campaignId, uint64 epoch, uint64 currentEpoch);
    error EpochAlreadyAcknowledged(bytes32 campaignId, uint64 epoch, uint64 lastAcknowledged);
    error EpochSkipped(bytes32 campaignId, uint64 epoch, uint64 expectedEpoch);
    error InvalidArgument(string what);

    modifier onlyGuardianOrGovernance() {
        if (!hasRole(GUARDIAN_ROLE, msg.sender) && !hasRole(GOVERNANCE_ROLE, msg.sender)) {
            revert NotGuardianOrGovernance(msg.sender);
        }
        _;
    }

    /// An approved node whose measurement was not removed since its approval.
    modifier onlyActiveNode() {
        _requireActiveNode(msg.sender);
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

    /// @notice Starts `child` from `parent`'s state as of position `fromTreeSize` of log
    /// `logId`, with a new config. `checkpointRoot` must be the root anchored for that log
    /// at that size. The child starts Paused: nodes carry out the fork (fetch the config,
    /// check the checkpoint against their log) and the child runs only once governance
    /// resumes it (in the same proposal, after this call, to run it at once).
    function forkCampaign(
        bytes32 parent,
        bytes32 child,
        bytes32 logId,
        uint64 fromTreeSize,
        bytes32 checkpointRoot,
        bytes32 configHash,
        string calldata configURI,
        bool pauseParent
    ) external onlyRole(GOVERNANCE_ROLE) {
        Status parentStatus = _existing(parent).status;
        if (parentStatus == Status.Stopped) revert InvalidTransition(parent, parentStatus, Directive.Fork);
        if (parent == child) revert InvalidArgument("child equals parent");
        if (fromTreeSize == 0) revert InvalidArgument("fromTreeSize is zero");
        _requireAnchored(logId, fromTreeSize, checkpointRoot);
        Campaign storage c = _create(child, configHash, configURI);
        c.parent = parent;
        c.forkLogId = logId;
        c.forkTreeSize = fromTreeSize;
        c.forkCheckpointRoot = checkpointRoot;
        bool paused = pauseParent && parentStatus == Status.Active;
        if (paused) _issue(parent, Directive.Pause, Status.Paused);
        _issue(child, Directive.Fork, Status.Paused);
        emit CampaignForked(parent, child, logId, fromTreeSize, checkpointRoot, configHash, configURI, paused);
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

    /// @notice Approves or removes a TEE measurement. Removing it suspends every node
    /// approved under it (checked when the node acts, not by iterating over nodes) until
    /// governance approves each node again; approving the measurement again does not
    /// revive them.
    function setMeasurement(bytes32 measurement, bool approved) external onlyRole(GOVERNANCE_ROLE) {
        if (measurement == bytes32(0)) revert InvalidArgument("measurement is zero");
        MeasurementRecord storage m = _measurements[measurement];
        if (m.approved && !approved) m.generation += 1;
        m.approved = approved;
        emit MeasurementSet(measurement, approved);
    }

    /// @notice Approves `node`, attested with `measurement` (bytes32(0) for a node without
    /// a TEE, which governance may approve explicitly). Approving an approved node again
    /// records its new measurement (and lifts a suspension).
    function approveNode(address node, bytes32 measurement) external onlyRole(GOVERNANCE_ROLE) {
        if (node == address(0)) revert InvalidArgument("node is the zero address");
        MeasurementRecord storage m = _measurements[measurement];
        if (measurement != bytes32(0) && !m.approved) revert MeasurementNotApproved(measurement);
        _nodes[node] = NodeRecord(measurement, true, m.generation);
        emit NodeApproved(node, measurement);
    }

    function revokeNode(address node) external onlyGuardianOrGovernance {
        if (!_nodes[node].approved) revert NodeNotApproved(node);
        _nodes[node].approved = false;
        emit NodeRevoked(node, msg.sender);
    }

    function measurementApproved(bytes32 measurement) external view returns (bool) {
        return _measurements[measurement].approved;
    }

    /// @notice Whether governance approved `node` (and no one revoked it since); see
    /// `isNodeActive` for whether it may act now.
    function nodeApproved(address node) external view returns (bool) {
        return _nodes[node].approved;
    }

    function nodeMeasurement(address node) external view returns (bytes32) {
        return _nodes[node].measurement;
    }

    /// @notice Whether `node` may anchor and acknowledge now: approved, and its measurement
    /// (if any) not removed since its approval.
    function isNodeActive(address node) public view returns (bool) {
        NodeRecord storage n = _nodes[node];
        if (!n.approved) return false;
        if (n.measurement == bytes32(0)) return true;
        MeasurementRecord storage m = _measurements[n.measurement];
        return m.approved && m.generation == n.generation;
    }

    // ---- node duties

    /// @notice The id under which `node` anchors its log `logName` (asi-node: the SHA-256
    /// of the log's origin line). Only `node` can ever anchor under it.
    function logIdOf(address node, bytes32 logName) public pure returns (bytes32) {
        return keccak256(abi.encode(node, logName));
    }

    /// @notice Anchors a checkpoint of the sender's log `logName`: the root of its first
    /// `treeSize` entries, extending `prevRoot`, the last root anchored for this log
    /// (zero for its first anchor). Tree sizes strictly grow; roots are never zero.
    function anchorLogRoot(bytes32 logName, uint64 treeSize, bytes32 root, bytes32 prevRoot)
        external
        onlyActiveNode
    {
        if (root == bytes32(0)) revert InvalidArgument("root is zero");
        bytes32 logId = logIdOf(msg.sender, logName);
        uint64 last = _logs[logId].treeSize;
        if (treeSize <= last) revert TreeSizeNotGrowing(logId, last, treeSize);
        bytes32 lastRoot = _roots[logId][last];
        if (prevRoot != lastRoot) revert PreviousRootMismatch(logId, last, lastRoot, prevRoot);
        _logs[logId] = LogHead(msg.sender, treeSize);
        _roots[logId][treeSize] = root;
        emit LogRootAnchored(logId, logName, msg.sender, treeSize, root);
    }

    /// @notice The root anchored for log `logId` at `treeSize`; zero if none was.
    function anchoredRoot(bytes32 logId, uint64 treeSize) external view returns (bytes32) {
        return _roots[logId][treeSize];
    }

    /// @notice The node that anchors log `logId`, and its last anchored size and root
    /// (zeros for a log never anchored).
    function logHead(bytes32 logId) external view returns (address node, uint64 treeSize, bytes32 root) {
        LogHead storage head = _logs[logId];
        return (head.node, head.treeSize, _roots[logId][head.treeSize]);
    }

    /// @notice Records that this node applied the campaign's directive `epoch`, logged as
    /// the entry whose hash is `logEntryHash`. Epochs are acknowledged one after another:
    /// `epoch` is the one after this node's last acknowledged epoch of the campaign.
    function acknowledge(bytes32 campaignId, uint64 epoch, bytes32 logEntryHash) external onlyActiveNode {
        Campaign storage c = _existing(campaignId);
        if (epoch == 0 || epoch > c.epoch) revert EpochNotIssued(campaignId, epoch, c.epoch);
        uint64 last = acknowledgedEpoch[campaignId][msg.sender];
        if (epoch <= last) revert EpochAlreadyAcknowledged(campaignId, epoch, last);
        if (epoch != last + 1) revert EpochSkipped(campaignId, epoch, last + 1);
        acknowledgedEpoch[campaignId][msg.sender] = epoch;
        emit DirectiveAcknowledged(campaignId, epoch, msg.sender, logEntryHash);
    }

    // ---- the node directory

    /// @notice Publishes (or replaces) the sender's directory entry: `endpoint`, the base
    /// URL of its API (1 to `MAX_ENDPOINT_BYTES` bytes), and its log `logName`, listed as
    /// `logIdOf(sender, logName)`. Only an active node publishes, and only its own entry.
    function publishNode(string calldata endpoint, bytes32 logName) external onlyActiveNode {
        uint256 length = bytes(endpoint).length;
        if (length == 0) revert InvalidArgument("endpoint is empty");
        if (length > MAX_ENDPOINT_BYTES) revert InvalidArgument("endpoint is too long");
        if (logName == bytes32(0)) revert InvalidArgument("log name is zero");
        NodeEntry storage e = _entries[msg.sender];
        if (e.node == address(0)) {
            e.node = msg.sender;
            published.push(msg.sender);
        }
        e.endpoint = endpoint;
        e.logId = logIdOf(msg.sender, logName);
        emit NodePublished(msg.sender, endpoint, e.logId);
    }

    /// @notice `node`'s published entry, whether or not it is active now (`node` zero:
    /// it never published).
    function nodeEntry(address node) external view returns (NodeEntry memory) {
        return _entries[node];
    }

    /// @notice How many nodes ever published (the length of `published`).
    function publishedCount() external view returns (uint256) {
        return published.length;
    }

    /// @notice The entries of the published nodes that are active now, in publishing
    /// order. Reads every published node: about 33,000 gas each with a 256-byte endpoint
    /// (its approval, measurement and up to ten words of entry), so an eth_call under the
    /// common 50M gas cap lists over a thousand; past that, read `published(i)` and
    /// `nodeEntry` one at a time.
    function directory() external view returns (NodeEntry[] memory entries) {
        uint256 total = published.length;
        uint256 active = 0;
        for (uint256 i = 0; i < total; i++) {
            if (isNodeActive(published[i])) active++;
        }
        entries = new NodeEntry[](active);
        uint256 j = 0;
        for (uint256 i = 0; i < total && j < active; i++) {
            address node = published[i];
            if (isNodeActive(node)) entries[j++] = _entries[node];
        }
    }

    // ---- internals

    function _requireActiveNode(address node) private view {
        NodeRecord storage n = _nodes[node];
        if (!n.approved) revert NodeNotApproved(node);
        bytes32 measurement = n.measurement;
        if (measurement == bytes32(0)) return;
        MeasurementRecord storage m = _measurements[measurement];
        if (!m.approved || m.generation != n.generation) revert NodeSuspended(node, measurement);
    }

    function _requireAnchored(bytes32 logId, uint64 treeSize, bytes32 checkpointRoot) private view {
        bytes32 anchored = _roots[logId][treeSize];
        if (anchored == bytes32(0) || anchored != checkpointRoot) {
            revert CheckpointNotAnchored(logId, treeSize, checkpointRoot, anchored);
        }
    }

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
