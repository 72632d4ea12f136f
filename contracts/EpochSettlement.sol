// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {EpochBook} from "./EpochBook.sol";
import {ReentrancyLock} from "./ReentrancyLock.sol";
import {SettlementMerkle} from "./SettlementMerkle.sol";

/// @title EpochSettlement
/// @notice Receives redeemed client funds from PaymentVault and pays workers' contributors from finalized epochs
/// (EpochBook): Merkle roots of cumulative earnings, plus the treasury's cumulative fees.
contract EpochSettlement is EpochBook, ReentrancyLock {
    using SafeERC20 for IERC20;

    /// @notice The payment token.
    IERC20 public immutable token;
    /// @notice Receiver of protocol fees.
    address public immutable treasury;
    /// @notice Total fees paid to the treasury so far.
    uint256 public feesPaid;
    /// @notice Cumulative amount already paid to each account.
    mapping(address account => uint256) public claimedOf;

    /// @notice `account` was paid `amount` against `epoch`, bringing its cumulative total to `cumulativeAmount`.
    event Claimed(uint256 indexed epoch, address indexed account, uint256 cumulativeAmount, uint256 amount);
    /// @notice `treasury` was paid `amount` of fees against `epoch`.
    event FeesClaimed(uint256 indexed epoch, address indexed treasury, uint256 amount);

    /// @notice `epoch` is in its challenge window until `claimableAt`.
    error EpochNotClaimable(uint256 epoch, uint64 claimableAt);
    /// @notice `epoch` was vetoed by the guardian: nothing is paid against it.
    error EpochVetoedError(uint256 epoch);
    /// @notice The proof for (`account`, `cumulativeAmount`) does not match the epoch root.
    error EpochInvalidProof(address account, uint256 cumulativeAmount);
    /// @notice `account` is owed nothing: `cumulativeAmount` is not above `claimed`.
    error EpochNothingToClaim(address account, uint256 cumulativeAmount, uint256 claimed);
    /// @notice Paying would bring `totalClaimed` above the `cumulativePayout` of the epoch claimed against.
    error EpochOverclaimed(uint256 totalClaimed, uint256 cumulativePayout);

    /// @param token_ The payment token.
    /// @param admin Receives DEFAULT_ADMIN_ROLE, SETTLER_ROLE and GUARDIAN_ROLE.
    /// @param treasury_ Receiver of protocol fees.
    /// @param challengeWindow_ Seconds before a posted epoch becomes final.
    constructor(IERC20 token_, address admin, address treasury_, uint64 challengeWindow_) EpochBook(admin, challengeWindow_) {
        if (address(token_) == address(0) || treasury_ == address(0)) revert EpochZeroAddress();
        token = token_;
        treasury = treasury_;
    }

    /// @notice Pays `account` its cumulative earnings in `epoch` minus what it was already paid; anyone may call.
    /// @dev Overclaim bound: totalClaimed never exceeds the claimed epoch's cumulativePayout. Payouts never decrease
    /// along the book, so this also bounds it by the latest finalized epoch's payout.
    /// @param epoch A finalized epoch.
    /// @param account The earning account (receives the payment).
    /// @param cumulativeAmount The account's cumulative amount in that epoch's tree.
    /// @param proof StandardMerkleTree proof of the leaf.
    function claim(uint256 epoch, address account, uint256 cumulativeAmount, bytes32[] calldata proof) external nonReentrant {
        EpochRecord storage e = _finalEpoch(epoch);
        bytes32 leaf = SettlementMerkle.earningsLeaf(account, cumulativeAmount);
        if (!MerkleProof.verifyCalldata(proof, e.root, leaf)) revert EpochInvalidProof(account, cumulativeAmount);
        uint256 claimed = claimedOf[account];
        if (cumulativeAmount <= claimed) revert EpochNothingToClaim(account, cumulativeAmount, claimed);
        uint256 amount = cumulativeAmount - claimed;
        uint256 total = _head.totalClaimed + amount;
        if (total > e.cumulativePayout) revert EpochOverclaimed(total, e.cumulativePayout);
        claimedOf[account] = cumulativeAmount;
        _head.totalClaimed = SafeCast.toUint128(total); // total <= cumulativePayout, a uint128
        emit Claimed(epoch, account, cumulativeAmount, amount);
        token.safeTransfer(account, amount);
    }

    /// @notice Pays the treasury the fees of `epoch` not yet paid; anyone may call.
    /// @param epoch A finalized epoch.
    function claimFees(uint256 epoch) external nonReentrant {
        EpochRecord storage e = _finalEpoch(epoch);
        uint256 fees = e.cumulativeFees;
        uint256 paid = feesPaid;
        if (fees <= paid) revert EpochNothingToClaim(treasury, fees, paid);
        uint256 amount = fees - paid;
        feesPaid = fees;
        emit FeesClaimed(epoch, treasury, amount);
        token.safeTransfer(treasury, amount);
    }

    /// @notice Total paid to accounts so far.
    /// @return The total, in token wei.
    function totalClaimed() external view returns (uint256) {
        return _head.totalClaimed;
    }

    /// @dev The record of a finalized epoch, or the reason it is not: unknown, vetoed, or in its window.
    function _finalEpoch(uint256 epoch) private view returns (EpochRecord storage e) {
        if (epoch == 0 || epoch > _head.lastEpoch) revert EpochUnknown(epoch);
        e = _epochs[epoch];
        if (e.vetoed) revert EpochVetoedError(epoch);
        if (block.timestamp < e.claimableAt) revert EpochNotClaimable(epoch, e.claimableAt);
    }
}
