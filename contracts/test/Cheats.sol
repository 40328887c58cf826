// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// The forge cheatcodes these tests use (forge serves them at the address below).
interface Vm {
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function expectRevert(bytes calldata revertData) external;
    function roll(uint256 newHeight) external;
    function warp(uint256 newTimestamp) external;
}

/// Assertions that revert with a message naming what differed.
abstract contract TestBase {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    function assertTrue(bool ok, string memory what) internal pure {
        require(ok, what);
    }

    function assertEqU(uint256 a, uint256 b, string memory what) internal pure {
        require(a == b, what);
    }

    function assertEqB(bytes32 a, bytes32 b, string memory what) internal pure {
        require(a == b, what);
    }
}
