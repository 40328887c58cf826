/// IC hash trees: the root hash (domain-separated SHA-256) and the CBOR form of a witness,
/// as the interface specification's "Certification" section defines them.
import Prim "mo:⛔";
import Sha256 "Sha256";

module {
  public type Tree = {
    #empty;
    #fork : (Tree, Tree);
    #labeled : ([Nat8], Tree);
    #leaf : [Nat8];
    #pruned : [Nat8];
  };

  public func concat(a : [Nat8], b : [Nat8]) : [Nat8] {
    let n = a.size();
    Prim.Array_tabulate<Nat8>(n + b.size(), func(i : Nat) : Nat8 = if (i < n) a[i] else b[i - n]);
  };

  func domain(name : Text) : [Nat8] {
    let bytes = Prim.blobToArray(Prim.encodeUtf8(name));
    concat([Prim.natToNat8(bytes.size())], bytes);
  };

  public func reconstruct(tree : Tree) : [Nat8] {
    switch tree {
      case (#empty) Sha256.digest(domain("ic-hashtree-empty"));
      case (#fork(left, right)) Sha256.digest(concat(concat(domain("ic-hashtree-fork"), reconstruct(left)), reconstruct(right)));
      case (#labeled(label_, sub)) Sha256.digest(concat(concat(domain("ic-hashtree-labeled"), label_), reconstruct(sub)));
      case (#leaf(value)) Sha256.digest(concat(domain("ic-hashtree-leaf"), value));
      case (#pruned(digest)) digest;
    };
  };

  // CBOR heads: major type in the top three bits, then the argument.
  func head(major : Nat8, n : Nat) : [Nat8] {
    if (n < 24) return [major * 32 + Prim.natToNat8(n)];
    if (n < 256) return [major * 32 + 24, Prim.natToNat8(n)];
    if (n < 65536) return [major * 32 + 25, Prim.natToNat8(n / 256), Prim.natToNat8(n % 256)];
    [major * 32 + 26, Prim.natToNat8(n / 16777216 % 256), Prim.natToNat8(n / 65536 % 256), Prim.natToNat8(n / 256 % 256), Prim.natToNat8(n % 256)];
  };

  func bytes(b : [Nat8]) : [Nat8] = concat(head(2, b.size()), b);

  func encode(tree : Tree) : [Nat8] {
    switch tree {
      case (#empty) [0x81, 0x00];
      case (#fork(left, right)) concat(concat([0x83, 0x01], encode(left)), encode(right));
      case (#labeled(label_, sub)) concat(concat([0x83, 0x02], bytes(label_)), encode(sub));
      case (#leaf(value)) concat([0x82, 0x03], bytes(value));
      case (#pruned(digest)) concat([0x82, 0x04], bytes(digest));
    };
  };

  /// The witness as the IC encodes hash trees: CBOR with the self-describe tag.
  public func toCbor(tree : Tree) : Blob = Prim.arrayToBlob(concat([0xd9, 0xd9, 0xf7], encode(tree)));
};
