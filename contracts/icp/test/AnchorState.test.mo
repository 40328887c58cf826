/// Interpreter tests of the anchor logic: authorisation, growing sizes, certified data.
/// Each block asserts (a failed assert traps and fails the run), then prints a PASS line;
/// WITNESS lines let the Python side check the hash tree with its own verifier.
import Prim "mo:⛔";
import AnchorState "../src/AnchorState";
import HashTree "../src/HashTree";

func hex(bytes : [Nat8]) : Text {
  let digits = Prim.blobToArray(Prim.encodeUtf8("0123456789abcdef"));
  func char(n : Nat8) : Text = Prim.charToText(Prim.nat32ToChar(Prim.natToNat32(Prim.nat8ToNat(digits[Prim.nat8ToNat(n)]))));
  var out = "";
  for (b in bytes.vals()) out #= char(b / 16) # char(b % 16);
  out;
};

func root(fill : Nat8) : Blob = Prim.arrayToBlob(Prim.Array_tabulate<Nat8>(32, func(_ : Nat) : Nat8 = fill));

let sns = Prim.principalOfBlob("\01\02\03");
let node = Prim.principalOfBlob("\04\05\06");
let stranger = Prim.principalOfBlob("\07\08\09");
let state = AnchorState.init(sns);

// Authorisation: only the controller adds or removes writers.
assert (AnchorState.authorise(state, stranger, stranger) == ?#not_controller);
assert (AnchorState.append(state, node, "log-a", 1, root(1), 0) == #err(#not_authorised));
assert (AnchorState.authorise(state, sns, node) == null);
assert (AnchorState.authorise(state, sns, node) == null);
assert (state.writers.size() == 1);
Prim.debugPrint("PASS authorisation");

// Sizes grow strictly per log; roots are 32 bytes; log ids are bounded.
let empty = AnchorState.certifiedData(state);
assert (AnchorState.append(state, node, "log-a", 5, root(1), 10) == #ok(1));
let afterFirst = AnchorState.certifiedData(state);
assert (afterFirst != empty);
assert (AnchorState.append(state, node, "log-a", 5, root(2), 11) == #err(#size_not_growing({ latest = 5 })));
assert (AnchorState.append(state, node, "log-a", 4, root(2), 11) == #err(#size_not_growing({ latest = 5 })));
assert (AnchorState.certifiedData(state) == afterFirst);
assert (AnchorState.append(state, node, "log-a", 9, root(3), 12) == #ok(2));
assert (AnchorState.append(state, node, "log-a", 10, "\00", 13) == #err(#bad_root({ length = 1 })));
assert (AnchorState.append(state, node, "", 10, root(4), 13) == #err(#bad_log_id));
assert (AnchorState.append(state, node, "log-0", 3, root(5), 14) == #ok(1));
assert (AnchorState.append(state, node, "log-z", 7, root(6), 15) == #ok(1));
switch (AnchorState.latest(state, "log-a")) {
  case (?entry) { assert (entry.tree_size == 9 and entry.root == root(3) and entry.writer == node) };
  case null { assert false };
};
assert (AnchorState.anchors(state, "log-a", 0, 10).size() == 2);
assert (AnchorState.anchors(state, "log-a", 1, 10)[0].tree_size == 9);
assert (AnchorState.latest(state, "log-b") == null);
Prim.debugPrint("PASS ordering");

// Certified data: every witness hashes to it, revealed or not.
let certified = AnchorState.certifiedData(state);
assert (certified != afterFirst);
for (id in ["log-a", "log-b"].vals()) {
  let w = AnchorState.witness(state, id);
  assert (Prim.arrayToBlob(HashTree.reconstruct(w)) == certified);
  Prim.debugPrint("WITNESS " # id # " " # hex(Prim.blobToArray(HashTree.toCbor(w))));
};
Prim.debugPrint("CERTIFIED " # hex(Prim.blobToArray(certified)));
Prim.debugPrint("PASS certified data");

// Directives: only from the controller, well formed.
let sha = root(9);
assert (AnchorState.recordDirective(state, sns, { campaign_id = "c1"; directive = "pause"; config_sha256 = null }, 20) == null);
assert (AnchorState.recordDirective(state, node, { campaign_id = "c1"; directive = "stop"; config_sha256 = null }, 21) == ?#not_controller);
assert (AnchorState.recordDirective(state, sns, { campaign_id = "c1"; directive = "fork"; config_sha256 = null }, 22) == ?#bad_directive("a fork needs the child config's config_sha256"));
assert (AnchorState.recordDirective(state, sns, { campaign_id = "c1"; directive = "fork"; config_sha256 = ?sha }, 23) == null);
assert (AnchorState.recordDirective(state, sns, { campaign_id = "c1"; directive = "explode"; config_sha256 = null }, 24) != null);
assert (AnchorState.recordDirective(state, sns, { campaign_id = ""; directive = "pause"; config_sha256 = null }, 25) != null);
assert (AnchorState.recordDirective(state, sns, { campaign_id = "c1"; directive = "resume"; config_sha256 = ?sha }, 26) != null);
assert (state.directives.size() == 2);
Prim.debugPrint("PASS directives");

// Revocation and a change of controller.
assert (AnchorState.revoke(state, stranger, node) == ?#not_controller);
assert (AnchorState.revoke(state, sns, node) == null);
assert (AnchorState.append(state, node, "log-a", 11, root(7), 16) == #err(#not_authorised));
assert (AnchorState.setController(state, sns, stranger) == null);
assert (AnchorState.authorise(state, sns, node) == ?#not_controller);
assert (AnchorState.authorise(state, stranger, node) == null);
assert (AnchorState.append(state, node, "log-a", 11, root(7), 16) == #ok(3));
Prim.debugPrint("PASS revocation");
