/// The ICP anchor canister: transparency-log roots, appended by authorised node
/// principals, certified so that a query answer can be verified against the IC root key.
import Prim "mo:⛔";
import AnchorState "AnchorState";
import HashTree "HashTree";

shared (install) persistent actor class Anchor() {
  let state : AnchorState.State = AnchorState.init(install.caller);

  func certify() { Prim.setCertifiedData(AnchorState.certifiedData(state)) };

  certify();

  system func postupgrade() { certify() };

  func result(e : ?AnchorState.Error) : { #ok; #err : AnchorState.Error } {
    switch e { case null #ok; case (?err) #err(err) };
  };

  /// Controller only: allow `writer` (a node's principal) to append roots.
  public shared ({ caller }) func authorise(writer : Principal) : async {
    #ok;
    #err : AnchorState.Error;
  } {
    result(AnchorState.authorise(state, caller, writer));
  };

  /// Controller only: withdraw a writer's right to append.
  public shared ({ caller }) func revoke(writer : Principal) : async {
    #ok;
    #err : AnchorState.Error;
  } {
    result(AnchorState.revoke(state, caller, writer));
  };

  /// Controller only: hand control to another principal (the SNS governance canister).
  public shared ({ caller }) func set_controller(next : Principal) : async {
    #ok;
    #err : AnchorState.Error;
  } {
    result(AnchorState.setController(state, caller, next));
  };

  /// Writers only: append a root; sizes must grow strictly per log.
  public shared ({ caller }) func anchor(log_id : Text, tree_size : Nat64, root : Blob) : async {
    #ok : Nat;
    #err : AnchorState.Error;
  } {
    let r = AnchorState.append(state, caller, log_id, tree_size, root, Prim.time());
    certify();
    r;
  };

  /// The latest anchor of a log, with the IC certificate and a CBOR hash-tree witness
  /// whose root is the certified data (the certificate is absent in replicated calls).
  public query func latest(log_id : Text) : async {
    anchor : ?AnchorState.Entry;
    certificate : ?Blob;
    witness : Blob;
  } {
    {
      anchor = AnchorState.latest(state, log_id);
      certificate = Prim.getCertificate();
      witness = HashTree.toCbor(AnchorState.witness(state, log_id));
    };
  };

  public query func anchors(log_id : Text, start : Nat, limit : Nat) : async [AnchorState.Entry] {
    AnchorState.anchors(state, log_id, start, if (limit > 100) 100 else limit);
  };

  public query func access() : async { controller : Principal; writers : [Principal] } {
    { controller = state.controller; writers = state.writers };
  };
};
