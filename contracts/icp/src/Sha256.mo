/// SHA-256 (FIPS 180-4) over byte arrays: the hash the IC's hash trees use.
import Prim "mo:⛔";

module {
  // First 32 bits of the fractional parts of the cube roots of the first 64 primes.
  let k : [Nat32] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5,
    0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
    0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];

  func n32(x : Nat8) : Nat32 = Prim.natToNat32(Prim.nat8ToNat(x));

  func byte(x : Nat32, shift : Nat32) : Nat8 = Prim.natToNat8(Prim.nat32ToNat((x >> shift) & 0xff));

  public func digest(data : [Nat8]) : [Nat8] {
    let size = data.size();
    let padded = ((size + 9 + 63) / 64) * 64;
    let msg = Prim.Array_init<Nat8>(padded, 0);
    var i = 0;
    while (i < size) { msg[i] := data[i]; i += 1 };
    msg[size] := 0x80;
    var bits = size * 8;
    var j = 1;
    while (j <= 8) {
      msg[padded - j] := Prim.natToNat8(bits % 256);
      bits := bits / 256;
      j += 1;
    };
    var h0 : Nat32 = 0x6a09e667;
    var h1 : Nat32 = 0xbb67ae85;
    var h2 : Nat32 = 0x3c6ef372;
    var h3 : Nat32 = 0xa54ff53a;
    var h4 : Nat32 = 0x510e527f;
    var h5 : Nat32 = 0x9b05688c;
    var h6 : Nat32 = 0x1f83d9ab;
    var h7 : Nat32 = 0x5be0cd19;
    let w = Prim.Array_init<Nat32>(64, 0);
    var block = 0;
    while (block < padded) {
      var t = 0;
      while (t < 16) {
        let b = block + 4 * t;
        w[t] := (n32(msg[b]) << 24) | (n32(msg[b + 1]) << 16) | (n32(msg[b + 2]) << 8) | n32(msg[b + 3]);
        t += 1;
      };
      while (t < 64) {
        let x = w[t - 15];
        let y = w[t - 2];
        let s0 = (x <>> 7) ^ (x <>> 18) ^ (x >> 3);
        let s1 = (y <>> 17) ^ (y <>> 19) ^ (y >> 10);
        w[t] := w[t - 16] +% s0 +% w[t - 7] +% s1;
        t += 1;
      };
      var a = h0;
      var b = h1;
      var c = h2;
      var d = h3;
      var e = h4;
      var f = h5;
      var g = h6;
      var h = h7;
      t := 0;
      while (t < 64) {
        let sum1 = (e <>> 6) ^ (e <>> 11) ^ (e <>> 25);
        let choose = (e & f) ^ ((e ^ 0xffffffff) & g);
        let temp1 = h +% sum1 +% choose +% k[t] +% w[t];
        let sum0 = (a <>> 2) ^ (a <>> 13) ^ (a <>> 22);
        let majority = (a & b) ^ (a & c) ^ (b & c);
        let temp2 = sum0 +% majority;
        h := g;
        g := f;
        f := e;
        e := d +% temp1;
        d := c;
        c := b;
        b := a;
        a := temp1 +% temp2;
        t += 1;
      };
      h0 +%= a;
      h1 +%= b;
      h2 +%= c;
      h3 +%= d;
      h4 +%= e;
      h5 +%= f;
      h6 +%= g;
      h7 +%= h;
      block += 64;
    };
    let words = [h0, h1, h2, h3, h4, h5, h6, h7];
    Prim.Array_tabulate<Nat8>(32, func(n : Nat) : Nat8 = byte(words[n / 4], Prim.natToNat32(24 - 8 * (n % 4))));
  };
};
