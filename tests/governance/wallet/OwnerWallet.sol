// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// A smart-contract voter for the relay's tests: ERC-1271 with one owner key. A signature
/// is valid for the wallet when its owner signed the hash itself (65 bytes r, s, v).
/// Compiled into OwnerWallet.json by compile.js (solc-js from contracts/node_modules).
contract OwnerWallet {
    bytes4 internal constant MAGIC = 0x1626ba7e;
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return 0xffffffff;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        address signer = ecrecover(hash, v, r, s);
        return signer != address(0) && signer == owner ? MAGIC : bytes4(0xffffffff);
    }
}
