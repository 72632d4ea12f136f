// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyLock} from "./ReentrancyLock.sol";

/// @title VaultDeposits
/// @notice Client deposits of PaymentVault and their withdrawal with notice.
/// @dev A withdrawal is requested, waits `withdrawalDelay` seconds, then pays what is still deposited (at most the
/// requested amount). Vouchers signed before the request stay redeemable during the notice, so a client cannot
/// run away with money already promised for served jobs.
/// Each client's unspent deposit and cumulative redeemed amount share one storage slot (`ClientAccount`, two
/// uint128 fields), so a redemption reads and writes one slot. Every write goes through `SafeCast.toUint128`:
/// a deposit or redemption that would take either above 2^128 - 1 wei (about 3.4e20 tokens of 18 decimals)
/// reverts with `SafeCastOverflowedUintDowncast(128, value)` instead of truncating.
abstract contract VaultDeposits is ReentrancyLock {
    using SafeERC20 for IERC20;

    /// @notice A requested withdrawal: `amount` payable from `unlockAt`.
    struct PendingWithdrawal { uint256 amount; uint64 unlockAt; }
    /// @notice A client's two balances, packed in one slot: unspent deposit and highest cumulative amount redeemed
    /// (the latter is written by PaymentVault).
    struct ClientAccount { uint128 deposit; uint128 redeemed; }

    /// @notice The payment token.
    IERC20 public immutable token;
    /// @notice Seconds between a withdrawal request and its payment.
    uint64 public immutable withdrawalDelay;
    /// @dev Unspent deposit and cumulative redeemed amount of each client (read through depositOf and redeemedOf).
    mapping(address client => ClientAccount) internal _accountOf;
    /// @notice Sum of all deposits ever made for each client.
    mapping(address client => uint256) public totalDepositedOf;
    /// @notice The pending withdrawal of each client (amount 0 when none).
    mapping(address client => PendingWithdrawal) public pendingWithdrawalOf;

    /// @notice `from` deposited `amount` for `client`, whose unspent deposit is now `balance`.
    event Deposited(address indexed client, address indexed from, uint256 amount, uint256 balance);
    /// @notice `client` asked to withdraw `amount`, payable from `unlockAt` (replaces any earlier request).
    event WithdrawalRequested(address indexed client, uint256 amount, uint64 unlockAt);
    /// @notice `client` cancelled its pending withdrawal.
    event WithdrawalCancelled(address indexed client);
    /// @notice `client` was paid `amount`; its unspent deposit is now `balance`.
    event Withdrawn(address indexed client, uint256 amount, uint256 balance);

    /// @notice An address argument was zero.
    error VaultZeroAddress();
    /// @notice An amount argument was zero.
    error VaultZeroAmount();
    /// @notice `client` needs `needed` but has only `available` deposited.
    error VaultInsufficientDeposit(address client, uint256 needed, uint256 available);
    /// @notice `client` has no pending withdrawal.
    error VaultNoWithdrawal(address client);
    /// @notice The withdrawal of `client` is in its notice period until `unlockAt`.
    error VaultWithdrawalLocked(address client, uint64 unlockAt);

    /// @param token_ The payment token.
    /// @param withdrawalDelay_ Notice, in seconds, between a withdrawal request and its payment.
    constructor(IERC20 token_, uint64 withdrawalDelay_) {
        if (address(token_) == address(0)) revert VaultZeroAddress();
        token = token_;
        withdrawalDelay = withdrawalDelay_;
    }

    /// @notice Unspent deposit of `client`.
    /// @param client The client.
    /// @return The unspent deposit, in token wei (at most 2^128 - 1).
    function depositOf(address client) external view returns (uint256) {
        return _accountOf[client].deposit;
    }

    /// @notice Deposits `amount` from the caller for the caller (needs prior approval).
    /// @param amount Amount to deposit.
    function deposit(uint256 amount) external nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @notice Deposits `amount` from the caller for `client` (needs prior approval).
    /// @param client Account credited.
    /// @param amount Amount to deposit.
    function depositFor(address client, uint256 amount) external nonReentrant {
        if (client == address(0)) revert VaultZeroAddress();
        _deposit(client, amount);
    }

    /// @notice Approves via EIP-2612 permit and deposits `amount` for the caller.
    /// @dev A failed permit (e.g. front-run) is ignored; the transfer then succeeds only if the allowance suffices.
    /// @param amount Amount to deposit (and permit value).
    /// @param deadline Permit deadline.
    /// @param v Permit signature v.
    /// @param r Permit signature r.
    /// @param s Permit signature s.
    function depositWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external nonReentrant {
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _deposit(msg.sender, amount);
    }

    /// @notice Asks to withdraw `amount` of the caller's deposit after `withdrawalDelay`; replaces any pending
    /// request and restarts the notice.
    /// @param amount Amount to withdraw (at most the current deposit).
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert VaultZeroAmount();
        uint256 available = _accountOf[msg.sender].deposit;
        if (amount > available) revert VaultInsufficientDeposit(msg.sender, amount, available);
        uint64 unlockAt = uint64(block.timestamp) + withdrawalDelay;
        pendingWithdrawalOf[msg.sender] = PendingWithdrawal(amount, unlockAt);
        emit WithdrawalRequested(msg.sender, amount, unlockAt);
    }

    /// @notice Cancels the caller's pending withdrawal.
    function cancelWithdrawal() external {
        // A zero amount means "none pending": requestWithdrawal refuses 0 and only the client
        // writes its own record, so the strict equality is the intended test.
        // slither-disable-next-line incorrect-equality
        if (pendingWithdrawalOf[msg.sender].amount == 0) revert VaultNoWithdrawal(msg.sender);
        delete pendingWithdrawalOf[msg.sender];
        emit WithdrawalCancelled(msg.sender);
    }

    /// @notice Pays the caller's pending withdrawal once its notice is over: the requested amount, or what is
    /// left of the deposit if redemptions during the notice spent part of it.
    function withdraw() external nonReentrant {
        PendingWithdrawal memory p = pendingWithdrawalOf[msg.sender];
        if (p.amount == 0) revert VaultNoWithdrawal(msg.sender);
        if (block.timestamp < p.unlockAt) revert VaultWithdrawalLocked(msg.sender, p.unlockAt);
        ClientAccount storage account = _accountOf[msg.sender];
        uint256 available = account.deposit;
        uint256 amount = p.amount < available ? p.amount : available;
        uint256 balance = available - amount;
        account.deposit = SafeCast.toUint128(balance);
        delete pendingWithdrawalOf[msg.sender];
        emit Withdrawn(msg.sender, amount, balance);
        if (amount != 0) token.safeTransfer(msg.sender, amount);
    }

    function _deposit(address client, uint256 amount) private {
        if (amount == 0) revert VaultZeroAmount();
        ClientAccount storage account = _accountOf[client];
        uint256 balance = account.deposit + amount;
        account.deposit = SafeCast.toUint128(balance);
        totalDepositedOf[client] += amount;
        emit Deposited(client, msg.sender, amount, balance);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }
}
