// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ReentrantToken (TEST ONLY)
/// @notice An ERC-20 whose next transfer, once armed, calls back into a target contract, to prove that the
/// inferledger contracts refuse re-entry while they move tokens. Never deploy outside tests.
contract ReentrantToken is ERC20 {
    /// @notice Contract called back on the next armed transfer.
    address public target;
    /// @notice Calldata of the call-back.
    bytes public callData;
    /// @notice Whether the next transfer (not a mint) calls back.
    bool public armed;
    /// @notice Whether the last call-back succeeded.
    bool public lastSuccess;
    /// @notice Revert data (or return data) of the last call-back.
    bytes public lastReturnData;
    /// @notice Number of call-backs made.
    uint256 public attempts;

    /// @notice A call-back into `target` was made; it returned `success` with `returnData`.
    event ReentryAttempted(address indexed target, bool success, bytes returnData);

    constructor() ERC20("Reentrant Test Token", "RTT") {}

    /// @notice Mints `amount` to `to` (anyone; test only).
    /// @param to Recipient.
    /// @param amount Amount.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arms a one-shot call-back of `target` with `data` on the next transfer.
    /// @param target_ Contract to call back.
    /// @param data Calldata.
    function arm(address target_, bytes calldata data) external {
        (target, callData, armed) = (target_, data, true);
    }

    /// @dev Moves the balance first, then calls back once (the call's failure is recorded, not bubbled).
    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (!armed || from == address(0)) return;
        armed = false;
        (bool ok, bytes memory ret) = target.call(callData);
        (lastSuccess, lastReturnData) = (ok, ret);
        ++attempts;
        emit ReentryAttempted(target, ok, ret);
    }
}
