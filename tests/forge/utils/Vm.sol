// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Vm
/// @notice The few forge cheatcodes the invariant tests use. forge-std is not vendored: the only npm copy
/// (`forge-std` 1.1.2) is an unofficial, outdated repackaging, and this interface is all the tests need.
interface Vm {
    /// @notice One log recorded after `recordLogs`.
    struct Log { bytes32[] topics; bytes data; address emitter; }

    /// @notice Sets block.timestamp.
    function warp(uint256 timestamp) external;
    /// @notice Sets msg.sender for the next call.
    function prank(address sender) external;
    /// @notice Signs `digest` with `privateKey`; s is in the lower half order.
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    /// @notice Address of `privateKey`.
    function addr(uint256 privateKey) external pure returns (address);
    /// @notice Starts recording emitted logs.
    function recordLogs() external;
    /// @notice Returns the logs recorded since the last call and clears them.
    function getRecordedLogs() external returns (Log[] memory logs);
    /// @notice Names `account` in traces.
    function label(address account, string calldata name) external;
    /// @notice Expects the next call to revert with exactly `revertData`.
    function expectRevert(bytes calldata revertData) external;
}

// The cheatcode address: address(uint160(uint256(keccak256("hevm cheat code")))).
Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
