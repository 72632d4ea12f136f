// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Console
/// @notice forge's console.log(string,uint256), shown in test output at -vv and above.
library Console {
    address private constant CONSOLE = address(0x000000000000000000636F6e736F6c652e6c6f67);

    /// @notice Logs `label` and `value`.
    function log(string memory label, uint256 value) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,uint256)", label, value));
        ok;
    }
}
