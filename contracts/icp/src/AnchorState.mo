/// The anchor canister's logic, free of the system API so the interpreter can test it:
/// per log id an append-only list of (tree size, root) with strictly growing sizes,
/// written only by principals the controller authorised, summarised as a hash tree
///
///   anchors / <log id> / root = <32-byte root>
///   anchors / <log id> / size = <tree size, 8 bytes big-endian>
///
/// whose root hash is the canister's certified data.
import Prim "mo:⛔";
import HashTree "HashTree";

module {
  public type Entry = {
    tree_size : Nat64;
    root : Blob;
    writer : Principal;
    time_ns : Nat64;
  };

  public type Error = {
    #not_controller;
    #not_authorised;
    #bad_root : { length : Nat };
    #bad_log_id;
    #size_not_growing : { latest : Nat64 };
    #bad_directive : Text;
  };

  /// The payload of the SNS generic functions that govern campaigns (the node reads the
  /// executed proposals; this canister checks and records them).
  public type Directive = {
    campaign_id : Text;
    directive : Text;
    config_sha256 : ?Blob;
  };

  public type DirectiveRecord = { directive : Directive; time_ns : Nat64 };

  public type Log = { id : Text; anchors : [Entry] };

  public type State = {
    var controller : Principal;
    var writers : [Principal];
    var logs : [Log]; // sorted by the UTF-8 bytes of the log id
    var directives : [DirectiveRecord];
  };

  public let MAX_LOG_ID_BYTES = 128;

  public func init(controller : Principal) : State = {
    var controller = controller;
    var writers = [];
    var logs = [];
    var directives = [];
  };

  func isWriter(state : State, p : Principal) : Bool {
    for (w in state.writers.vals()) { if (w == p) return true };
    false;
  };

  public func authorise(state : State, caller : Principal, writer : Principal) : ?Error {
    if (caller != state.controller) return ?#not_controller;
    if (not isWriter(state, writer)) {
      state.writers := Prim.Array_tabulate<Principal>(
        state.writers.size() + 1,
        func(i : Nat) : Principal = if (i < state.writers.size()) state.writers[i] else writer,
      );
    };
    null;
  };

  public func revoke(state : State, caller : Principal, writer : Principal) : ?Error {
    if (caller != state.controller) return ?#not_controller;
    var kept : [Principal] = [];
    for (w in state.writers.vals()) {
      if (w != writer) kept := Prim.Array_tabulate<Principal>(kept.size() + 1, func(i : Nat) : Principal = if (i < kept.size()) kept[i] else w);
    };
    state.writers := kept;
    null;
  };

  public func setController(state : State, caller : Principal, next : Principal) : ?Error {
    if (caller != state.controller) return ?#not_controller;
    state.controller := next;
    null;
  };

  /// Why a directive payload is malformed, or null if it is well formed.
  public func checkDirective(d : Directive) : ?Text {
    let size = Prim.encodeUtf8(d.campaign_id).size();
    if (size == 0 or size > MAX_LOG_ID_BYTES) return ?"campaign_id must be 1 to 128 bytes";
    switch (d.directive, d.config_sha256) {
      case ("fork", ?hash) { if (hash.size() != 32) return ?"config_sha256 must be 32 bytes" };
      case ("fork", null) return ?"a fork needs the child config's config_sha256";
      case ("pause" or "resume" or "stop", null) {};
      case ("pause" or "resume" or "stop", ?_) return ?"only a fork carries config_sha256";
      case _ return ?"directive must be pause, resume, stop or fork";
    };
    null;
  };

  /// Controller only (the SNS executing an adopted proposal): record a directive.
  public func recordDirective(state : State, caller : Principal, d : Directive, now : Nat64) : ?Error {
    if (caller != state.controller) return ?#not_controller;
    switch (checkDirective(d)) {
      case (?reason) return ?#bad_directive(reason);
      case null {};
    };
    let old = state.directives;
    let entry : DirectiveRecord = { directive = d; time_ns = now };
    state.directives := Prim.Array_tabulate<DirectiveRecord>(old.size() + 1, func(i : Nat) : DirectiveRecord = if (i < old.size()) old[i] else entry);
    null;
  };

  func key(id : Text) : Blob = Prim.encodeUtf8(id);

  /// Appends a root; returns the log's new number of anchors.
  public func append(state : State, caller : Principal, logId : Text, treeSize : Nat64, root : Blob, now : Nat64) : {
    #ok : Nat;
    #err : Error;
  } {
    if (not isWriter(state, caller)) return #err(#not_authorised);
    let idBytes = key(logId).size();
    if (idBytes == 0 or idBytes > MAX_LOG_ID_BYTES) return #err(#bad_log_id);
    if (root.size() != 32) return #err(#bad_root({ length = root.size() }));
    let entry : Entry = { tree_size = treeSize; root; writer = caller; time_ns = now };
    let logs = state.logs;
    var at = 0;
    while (at < logs.size() and key(logs[at].id) < key(logId)) at += 1;
    if (at < logs.size() and logs[at].id == logId) {
      let old = logs[at].anchors;
      let latest = old[old.size() - 1].tree_size;
      if (treeSize <= latest) return #err(#size_not_growing({ latest }));
      let grown = Prim.Array_tabulate<Entry>(old.size() + 1, func(i : Nat) : Entry = if (i < old.size()) old[i] else entry);
      state.logs := Prim.Array_tabulate<Log>(logs.size(), func(i : Nat) : Log = if (i == at) ({ id = logId; anchors = grown } : Log) else logs[i]);
      return #ok(grown.size());
    };
    let fresh : Log = { id = logId; anchors = [entry] };
    state.logs := Prim.Array_tabulate<Log>(
      logs.size() + 1,
      func(i : Nat) : Log = if (i < at) logs[i] else if (i == at) fresh else logs[i - 1],
    );
    #ok(1);
  };

  public func latest(state : State, logId : Text) : ?Entry {
    for (log in state.logs.vals()) {
      if (log.id == logId) return ?log.anchors[log.anchors.size() - 1];
    };
    null;
  };

  public func anchors(state : State, logId : Text, start : Nat, limit : Nat) : [Entry] {
    for (log in state.logs.vals()) {
      if (log.id == logId) {
        let all = log.anchors;
        if (start >= all.size()) return [];
        let n = if (all.size() - start < limit) all.size() - start else limit;
        return Prim.Array_tabulate<Entry>(n, func(i : Nat) : Entry = all[start + i]);
      };
    };
    [];
  };

  func sizeBytes(n : Nat64) : [Nat8] {
    Prim.Array_tabulate<Nat8>(8, func(i : Nat) : Nat8 = Prim.natToNat8(Prim.nat64ToNat((n >> Prim.natToNat64(56 - 8 * i)) & 0xff)));
  };

  func text(t : Text) : [Nat8] = Prim.blobToArray(Prim.encodeUtf8(t));

  func logTree(log : Log) : HashTree.Tree {
    let last = log.anchors[log.anchors.size() - 1];
    #fork(
      #labeled(text("root"), #leaf(Prim.blobToArray(last.root))),
      #labeled(text("size"), #leaf(sizeBytes(last.tree_size))),
    );
  };

  // A balanced fork over logs[from..to); `reveal` says which logs keep their subtree.
  func forks(logs : [Log], from : Nat, to : Nat, reveal : (Text) -> Bool) : HashTree.Tree {
    if (to == from) return #empty;
    if (to - from == 1) {
      let log = logs[from];
      let sub = logTree(log);
      return #labeled(text(log.id), if (reveal(log.id)) sub else #pruned(HashTree.reconstruct(sub)));
    };
    let mid = from + (to - from) / 2;
    #fork(forks(logs, from, mid, reveal), forks(logs, mid, to, reveal));
  };

  public func tree(state : State) : HashTree.Tree {
    #labeled(text("anchors"), forks(state.logs, 0, state.logs.size(), func(_ : Text) : Bool = true));
  };

  /// The 32 bytes the canister certifies.
  public func certifiedData(state : State) : Blob = Prim.arrayToBlob(HashTree.reconstruct(tree(state)));

  /// A witness that reveals one log's latest anchor (or proves the log absent) and
  /// prunes every other log's subtree.
  public func witness(state : State, logId : Text) : HashTree.Tree {
    #labeled(text("anchors"), forks(state.logs, 0, state.logs.size(), func(id : Text) : Bool = id == logId));
  };
};
