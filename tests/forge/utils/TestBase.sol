// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title TestBase
/// @notice What forge reads from a test contract to steer invariant runs, plus assertion helpers that
/// revert with the values (a failing invariant or test is one that reverts).
abstract contract TestBase {
    /// @notice A contract and the functions of it that the fuzzer may call (forge's FuzzSelector).
    struct FuzzSelector { address addr; bytes4[] selectors; }

    /// @notice Two values differ: `what` was `actual`, expected `expected`.
    error AssertEq(string what, uint256 actual, uint256 expected);
    /// @notice `what` is `actual`, above its bound `bound`.
    error AssertLe(string what, uint256 actual, uint256 bound);
    /// @notice A condition named `what` was false.
    error AssertTrue(string what);

    /// @notice Marks this as a test contract for tools that look for it.
    bool public constant IS_TEST = true;

    address[] private _targetContracts;
    FuzzSelector[] private _targetSelectors;

    /// @notice Contracts the invariant fuzzer calls.
    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    /// @notice Functions the invariant fuzzer calls.
    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }

    function _target(address target, bytes4[] memory selectors) internal {
        _targetContracts.push(target);
        _targetSelectors.push(FuzzSelector(target, selectors));
    }

    function _eq(string memory what, uint256 actual, uint256 expected) internal pure {
        if (actual != expected) revert AssertEq(what, actual, expected);
    }

    function _le(string memory what, uint256 actual, uint256 bound) internal pure {
        if (actual > bound) revert AssertLe(what, actual, bound);
    }

    function _true(string memory what, bool condition) internal pure {
        if (!condition) revert AssertTrue(what);
    }
}
