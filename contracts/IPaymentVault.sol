// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IPaymentVault
/// @notice The part of PaymentVault that EpochSettlement relies on.
interface IPaymentVault {
    /// @notice Total client funds ever redeemed by the vault and transferred to the settlement contract.
    /// @return The cumulative redeemed amount, in token wei.
    function totalRedeemed() external view returns (uint256);
}
