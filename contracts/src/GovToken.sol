// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Time} from "@openzeppelin/contracts/utils/types/Time.sol";

/// @title GovToken: the DAO's voting token (ERC20Votes).
/// @notice The whole supply is minted once, at deployment, to the holders of the initial
/// distribution; votes count only after delegation. Its ERC-6372 clock, which the
/// Governor's voting delay and period count in, is block numbers or (for L2s, whose block
/// numbers are not a steady clock) timestamps, fixed at deployment.
contract GovToken is ERC20, ERC20Permit, ERC20Votes {
    bool private immutable _timestampClock;

    error InvalidDistribution(string what);

    constructor(
        string memory name_,
        string memory symbol_,
        address[] memory holders,
        uint256[] memory amounts,
        bool timestampClock
    ) ERC20(name_, symbol_) ERC20Permit(name_) {
        if (holders.length == 0) revert InvalidDistribution("no holders");
        if (holders.length != amounts.length) revert InvalidDistribution("holders and amounts differ in length");
        _timestampClock = timestampClock;
        for (uint256 i = 0; i < holders.length; i++) {
            if (amounts[i] == 0) revert InvalidDistribution("an amount is zero");
            _mint(holders[i], amounts[i]);
        }
    }

    function clock() public view override returns (uint48) {
        return _timestampClock ? Time.timestamp() : Time.blockNumber();
    }

    // solhint-disable-next-line func-name-mixedcase
    function CLOCK_MODE() public view override returns (string memory) {
        return _timestampClock ? "mode=timestamp" : "mode=blocknumber&from=default";
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
