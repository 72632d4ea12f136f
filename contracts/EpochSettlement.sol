// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IPaymentVault} from "./IPaymentVault.sol";

/// @title EpochSettlement
/// @notice Receives redeemed client funds from PaymentVault and pays workers' contributors per epoch from
/// Merkle roots of cumulative earnings (OpenZeppelin StandardMerkleTree leaves of (address, uint256)).
contract EpochSettlement is AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice A posted epoch: Merkle root, hash of the published epoch file, cumulative totals and timing.
    struct EpochRecord {
        bytes32 root;
        bytes32 fileHash;
        uint256 cumulativePayout;
        uint256 cumulativeFees;
        uint64 postedAt;
        uint64 claimableAt;
    }

    /// @notice Role allowed to post epochs.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");

    /// @notice The payment token.
    IERC20 public immutable token;
    /// @notice Receiver of protocol fees.
    address public immutable treasury;
    /// @notice Seconds between posting an epoch and it becoming claimable.
    uint64 public immutable challengeWindow;
    /// @notice The PaymentVault funding this contract (set once).
    address public vault;
    /// @notice Last posted epoch (0 before the first; the first epoch is 1).
    uint256 public lastEpoch;
    /// @notice Total paid to accounts so far.
    uint256 public totalClaimed;
    /// @notice Total fees paid to the treasury so far.
    uint256 public feesPaid;
    /// @notice Posted epochs by number.
    mapping(uint256 epoch => EpochRecord) public epochs;
    /// @notice Cumulative amount already paid to each account.
    mapping(address account => uint256) public claimedOf;

    /// @notice The vault address was set.
    event VaultSet(address vault);
    /// @notice Epoch `epoch` was posted; it is claimable from `claimableAt`.
    event EpochPosted(uint256 indexed epoch, bytes32 root, bytes32 fileHash, uint256 cumulativePayout, uint256 cumulativeFees, uint64 claimableAt);
    /// @notice `account` was paid `amount`, bringing its cumulative total to `cumulativeAmount`.
    event Claimed(uint256 indexed epoch, address indexed account, uint256 cumulativeAmount, uint256 amount);
    /// @notice `treasury` was paid `amount` of fees.
    event FeesClaimed(uint256 indexed epoch, address indexed treasury, uint256 amount);

    /// @notice The vault address is already `current`.
    error EpochVaultAlreadySet(address current);
    /// @notice The vault address has not been set.
    error EpochVaultNotSet();
    /// @notice An address argument was zero.
    error EpochZeroAddress();
    /// @notice Epochs must be posted in order; `expected` was due, `got` was given.
    error EpochOutOfOrder(uint256 expected, uint256 got);
    /// @notice The Merkle root was zero.
    error EpochEmptyRoot();
    /// @notice Cumulative payout or fees of `epoch` are below the previous epoch's.
    error EpochTotalsDecreased(uint256 epoch);
    /// @notice Payout plus fees (`required`) exceed what the vault has `redeemed`.
    error EpochUnderfunded(uint256 required, uint256 redeemed);
    /// @notice `epoch` has not been posted.
    error EpochUnknown(uint256 epoch);
    /// @notice `epoch` is in its challenge window until `claimableAt`.
    error EpochNotClaimable(uint256 epoch, uint64 claimableAt);
    /// @notice The proof for (`account`, `cumulativeAmount`) does not match the epoch root.
    error EpochInvalidProof(address account, uint256 cumulativeAmount);
    /// @notice `account` is owed nothing: `cumulativeAmount` is not above `claimed`.
    error EpochNothingToClaim(address account, uint256 cumulativeAmount, uint256 claimed);
    /// @notice Paying would bring `totalClaimed` above the latest `cumulativePayout`.
    error EpochOverclaimed(uint256 totalClaimed, uint256 cumulativePayout);

    /// @param token_ The payment token.
    /// @param admin Receives DEFAULT_ADMIN_ROLE and SETTLER_ROLE.
    /// @param treasury_ Receiver of protocol fees.
    /// @param challengeWindow_ Seconds before a posted epoch becomes claimable.
    constructor(IERC20 token_, address admin, address treasury_, uint64 challengeWindow_) {
        if (address(token_) == address(0) || admin == address(0) || treasury_ == address(0)) revert EpochZeroAddress();
        token = token_;
        treasury = treasury_;
        challengeWindow = challengeWindow_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(SETTLER_ROLE, admin);
    }

    /// @notice Sets the PaymentVault; only admin, only once.
    /// @param vault_ The vault contract.
    function setVault(address vault_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (vault != address(0)) revert EpochVaultAlreadySet(vault);
        if (vault_ == address(0)) revert EpochZeroAddress();
        vault = vault_;
        emit VaultSet(vault_);
    }

    /// @notice Posts epoch `epoch` (must be lastEpoch + 1); only SETTLER_ROLE.
    /// @param epoch Epoch number.
    /// @param root StandardMerkleTree root of (account, cumulativeAmount) leaves.
    /// @param fileHash Hash of the published epoch file.
    /// @param cumulativePayout Total owed to accounts through this epoch.
    /// @param cumulativeFees Total owed to the treasury through this epoch.
    function postEpoch(uint256 epoch, bytes32 root, bytes32 fileHash, uint256 cumulativePayout, uint256 cumulativeFees)
        external
        onlyRole(SETTLER_ROLE)
    {
        uint256 prev = lastEpoch;
        if (epoch != prev + 1) revert EpochOutOfOrder(prev + 1, epoch);
        if (root == bytes32(0)) revert EpochEmptyRoot();
        EpochRecord storage p = epochs[prev];
        if (cumulativePayout < p.cumulativePayout || cumulativeFees < p.cumulativeFees) revert EpochTotalsDecreased(epoch);
        if (vault == address(0)) revert EpochVaultNotSet();
        uint256 redeemed = IPaymentVault(vault).totalRedeemed();
        if (cumulativePayout + cumulativeFees > redeemed) revert EpochUnderfunded(cumulativePayout + cumulativeFees, redeemed);
        uint64 claimableAt = uint64(block.timestamp) + challengeWindow;
        epochs[epoch] = EpochRecord(root, fileHash, cumulativePayout, cumulativeFees, uint64(block.timestamp), claimableAt);
        lastEpoch = epoch;
        emit EpochPosted(epoch, root, fileHash, cumulativePayout, cumulativeFees, claimableAt);
    }

    /// @notice Pays `account` its cumulative earnings in `epoch` minus what it was already paid; anyone may call.
    /// @param epoch A posted, claimable epoch.
    /// @param account The earning account (receives the payment).
    /// @param cumulativeAmount The account's cumulative amount in that epoch's tree.
    /// @param proof StandardMerkleTree proof of the leaf.
    function claim(uint256 epoch, address account, uint256 cumulativeAmount, bytes32[] calldata proof) external nonReentrant {
        EpochRecord storage e = _claimableEpoch(epoch);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, e.root, leaf)) revert EpochInvalidProof(account, cumulativeAmount);
        uint256 claimed = claimedOf[account];
        if (cumulativeAmount <= claimed) revert EpochNothingToClaim(account, cumulativeAmount, claimed);
        uint256 amount = cumulativeAmount - claimed;
        claimedOf[account] = cumulativeAmount;
        uint256 total = totalClaimed + amount;
        totalClaimed = total;
        uint256 payout = epochs[lastEpoch].cumulativePayout;
        if (total > payout) revert EpochOverclaimed(total, payout);
        emit Claimed(epoch, account, cumulativeAmount, amount);
        token.safeTransfer(account, amount);
    }

    /// @notice Pays the treasury the fees of `epoch` not yet paid; anyone may call.
    /// @param epoch A posted, claimable epoch.
    function claimFees(uint256 epoch) external nonReentrant {
        EpochRecord storage e = _claimableEpoch(epoch);
        uint256 fees = e.cumulativeFees;
        uint256 paid = feesPaid;
        if (fees <= paid) revert EpochNothingToClaim(treasury, fees, paid);
        uint256 amount = fees - paid;
        feesPaid = fees;
        emit FeesClaimed(epoch, treasury, amount);
        token.safeTransfer(treasury, amount);
    }

    /// @dev Posted and past its challenge window. The guardian veto (later issue) belongs here:
    /// a vetoed epoch must fail this check.
    function _claimableEpoch(uint256 epoch) private view returns (EpochRecord storage e) {
        if (epoch == 0 || epoch > lastEpoch) revert EpochUnknown(epoch);
        e = epochs[epoch];
        if (block.timestamp < e.claimableAt) revert EpochNotClaimable(epoch, e.claimableAt);
    }
}
