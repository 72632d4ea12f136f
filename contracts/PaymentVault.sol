// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IPaymentVault} from "./IPaymentVault.sol";
import {VaultDeposits} from "./VaultDeposits.sol";

/// @title PaymentVault
/// @notice Holds client deposits (see VaultDeposits: deposits and withdrawal with notice) and redeems EIP-712
/// cumulative vouchers, forwarding funds to EpochSettlement.
contract PaymentVault is IPaymentVault, AccessControl, EIP712, VaultDeposits {
    using SafeERC20 for IERC20;

    /// @notice A client's signed promise to pay up to `cumulativeAmount` in total, valid until `expiry`.
    struct Voucher { address client; uint256 cumulativeAmount; uint256 expiry; }
    /// @notice A voucher, its signature and the cumulative amount (<= voucher.cumulativeAmount) actually charged.
    struct Redemption { Voucher voucher; bytes signature; uint256 amount; }

    /// @notice Role allowed to redeem vouchers.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice EIP-712 type hash of Voucher.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(address client,uint256 cumulativeAmount,uint256 expiry)");
    /// @notice Maximum number of redemptions in one `redeem` call.
    uint256 public constant MAX_REDEEM_BATCH = 64;

    /// @notice EpochSettlement contract receiving redeemed funds (set once).
    address public settlement;
    /// @notice Sum of all increases ever redeemed.
    uint256 public totalRedeemed;

    /// @notice The settlement address was set.
    event SettlementSet(address settlement);
    /// @notice A voucher of `client` was redeemed up to `cumulativeAmount`, charging `increase` more.
    event VoucherRedeemed(address indexed client, uint256 cumulativeAmount, uint256 increase);

    /// @notice The settlement address is already `current`.
    error VaultSettlementAlreadySet(address current);
    /// @notice The settlement address has not been set.
    error VaultSettlementNotSet();
    /// @notice The batch has `length` items, more than `max`.
    error VaultBatchTooLarge(uint256 length, uint256 max);
    /// @notice The voucher of `client` expired at `expiry`.
    error VaultVoucherExpired(address client, uint256 expiry);
    /// @notice The voucher names `client` but was signed by `signer`.
    error VaultVoucherSignerMismatch(address client, address signer);
    /// @notice The claimed `amount` exceeds the signed `cumulativeAmount`.
    error VaultAmountAboveVoucher(address client, uint256 amount, uint256 cumulativeAmount);

    /// @param token_ The payment token (ComputeToken).
    /// @param admin Receives DEFAULT_ADMIN_ROLE and SETTLER_ROLE.
    /// @param withdrawalDelay_ Notice, in seconds, between a withdrawal request and its payment.
    constructor(IERC20 token_, address admin, uint64 withdrawalDelay_)
        EIP712("inferledger PaymentVault", "1")
        VaultDeposits(token_, withdrawalDelay_)
    {
        if (admin == address(0)) revert VaultZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(SETTLER_ROLE, admin);
    }

    /// @notice Sets the EpochSettlement address that receives redeemed funds; only admin, only once.
    /// @param settlement_ The settlement contract.
    function setSettlement(address settlement_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (settlement != address(0)) revert VaultSettlementAlreadySet(settlement);
        if (settlement_ == address(0)) revert VaultZeroAddress();
        settlement = settlement_;
        emit SettlementSet(settlement_);
    }

    /// @notice Redeems a batch of vouchers and sends the total increase to the settlement contract.
    /// @dev Only SETTLER_ROLE. Items whose amount is not above what was already redeemed are skipped,
    /// so a retried batch is a no-op.
    /// @param items Redemptions, processed in order.
    function redeem(Redemption[] calldata items) external onlyRole(SETTLER_ROLE) nonReentrant {
        uint256 n = items.length;
        if (n > MAX_REDEEM_BATCH) revert VaultBatchTooLarge(n, MAX_REDEEM_BATCH);
        address to = settlement;
        if (to == address(0)) revert VaultSettlementNotSet();
        uint256 total = 0;
        for (uint256 i; i < n; ++i) {
            total += _redeemOne(items[i]);
        }
        if (total != 0) {
            totalRedeemed += total; // once per batch, not per voucher
            token.safeTransfer(to, total);
        }
    }

    /// @notice Highest cumulative amount redeemed for `client`.
    /// @param client The client.
    /// @return The cumulative redeemed amount, in token wei (at most 2^128 - 1).
    function redeemedOf(address client) external view returns (uint256) {
        return _accountOf[client].redeemed;
    }

    /// @notice Full EIP-712 digest of a voucher under this vault's domain.
    /// @param v The voucher.
    /// @return The digest the client signs.
    function hashVoucher(Voucher calldata v) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, v.client, v.cumulativeAmount, v.expiry)));
    }

    /// @notice EIP-712 domain separator ("inferledger PaymentVault", "1", chainId, this).
    /// @return The domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @dev Checks and applies one redemption; returns the increase charged (0 for a skipped item). The caller adds
    /// it to totalRedeemed and transfers it.
    function _redeemOne(Redemption calldata item) private returns (uint256 increase) {
        Voucher calldata v = item.voucher;
        address client = v.client;
        uint256 amount = item.amount;
        ClientAccount memory account = _accountOf[client]; // one slot: deposit and redeemed
        uint256 already = account.redeemed;
        // Already redeemed up to `amount`: skip before any other check, so a retried batch is
        // a no-op even after its vouchers expired. A skipped item moves no money.
        if (amount <= already) return 0;
        if (block.timestamp > v.expiry) revert VaultVoucherExpired(client, v.expiry);
        address signer = ECDSA.recover(hashVoucher(v), item.signature);
        if (signer != client) revert VaultVoucherSignerMismatch(client, signer);
        if (amount > v.cumulativeAmount) revert VaultAmountAboveVoucher(client, amount, v.cumulativeAmount);
        increase = amount - already;
        uint256 available = account.deposit;
        if (increase > available) revert VaultInsufficientDeposit(client, increase, available);
        account.deposit = SafeCast.toUint128(available - increase);
        account.redeemed = SafeCast.toUint128(amount);
        _accountOf[client] = account;
        emit VoucherRedeemed(client, amount, increase);
    }
}
