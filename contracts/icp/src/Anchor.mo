/// The ICP anchor canister: transparency-log roots, appended by authorised node
/// principals, certified so that a query answer can be verified against the IC root key.
import Principal "mo:core/Principal";
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

  /// SNS generic function target (controller only): record a campaign directive. Traps
  /// on a malformed payload or another caller, so the proposal's execution fails.
  public shared ({ caller }) func directive(d : AnchorState.Directive) : async () {
    switch (AnchorState.recordDirective(state, caller, d, Prim.time())) {
      case null {};
      case (?#bad_directive(reason)) Prim.trap("bad directive: " # reason);
      case (?_) Prim.trap("only the controller records directives");
    };
  };

  func validation(reason : ?Text, ok : Text) : { #Ok : Text; #Err : Text } {
    switch reason { case null #Ok(ok); case (?r) #Err(r) };
  };

  /// SNS validators: the SNS calls these before a proposal is submitted.
  public query func validate_directive(d : AnchorState.Directive) : async {
    #Ok : Text;
    #Err : Text;
  } {
    validation(AnchorState.checkDirective(d), d.directive # " campaign " # d.campaign_id);
  };

  public query func validate_authorise(writer : Principal) : async { #Ok : Text; #Err : Text } {
    #Ok("authorise " # Principal.toText(writer) # " to anchor roots");
  };

  public query func validate_revoke(writer : Principal) : async { #Ok : Text; #Err : Text } {
    #Ok("revoke " # Principal.toText(writer));
  };

  public query func directives(start : Nat, limit : Nat) : async [AnchorState.DirectiveRecord] {
    let all = state.directives;
    if (start >= all.size()) return [];
    let n = if (all.size() - start < limit) all.size() - start else limit;
    Prim.Array_tabulate<AnchorState.DirectiveRecord>(if (n > 100) 100 else n, func(i : Nat) : AnchorState.DirectiveRecord = all[start + i]);
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
