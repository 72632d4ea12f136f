// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IPaymentVault} from "./IPaymentVault.sol";
import {IEpochSettlement} from "./IEpochSettlement.sol";
import {SettlementMerkle} from "./SettlementMerkle.sol";

/// @title EpochBook
/// @notice The posted epochs of EpochSettlement: posting, the guardian veto during the challenge window, finality
/// and result proofs.
/// @dev Invariant: every epoch below `lastEpoch` is not vetoed; only `lastEpoch` itself may be. A veto of an earlier
/// epoch truncates the book back to it (later epochs, all still in their windows, are void), so each posted
/// epoch's totals were compared with a predecessor that is not vetoed and totals never decrease along the book.
abstract contract EpochBook is IEpochSettlement, AccessControl {
    /// @notice A posted epoch: earnings and results Merkle roots, hash of the published epoch file, cumulative
    /// totals, timing, and whether the guardian vetoed it.
    /// @dev Five slots: the three hashes, then {cumulativePayout, postedAt, claimableAt, vetoed} packed in one
    /// (what `claim` reads besides `root`), then cumulativeFees. cumulativePayout is written through
    /// `SafeCast.toUint128` (at most 2^128 - 1 wei) and postedAt through `SafeCast.toUint48`; the `epochs` getter
    /// returns them widened, in the original order and types.
    struct EpochRecord {
        bytes32 root;
        bytes32 resultsRoot;
        bytes32 fileHash;
        uint128 cumulativePayout;
        uint48 postedAt;
        uint64 claimableAt;
        bool vetoed;
        uint256 cumulativeFees;
    }

    /// @notice Role allowed to post epochs.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice Role allowed to veto an epoch during its challenge window.
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice Seconds between posting an epoch and it becoming final.
    uint64 public immutable challengeWindow;
    /// @notice The PaymentVault funding this contract (set once).
    address public vault;
    /// @notice The last posted epoch and EpochSettlement's total claimed, packed in one slot because `claim`
    /// reads both (read them through `lastEpoch` and `totalClaimed`).
    /// @dev lastEpoch is written through `SafeCast.toUint64`. totalClaimed never exceeds the uint128
    /// cumulativePayout of a finalized epoch (the overclaim bound), so it always fits.
    struct BookHead { uint64 lastEpoch; uint128 totalClaimed; }

    /// @dev See BookHead.
    BookHead internal _head;
    /// @dev Posted epochs by number (read through `epochs`).
    mapping(uint256 epoch => EpochRecord) internal _epochs;

    /// @notice The vault address was set.
    event VaultSet(address vault);
    /// @notice Epoch `epoch` was posted (or re-posted after a veto); it is final from `claimableAt` unless vetoed.
    event EpochPosted(
        uint256 indexed epoch,
        bytes32 root,
        bytes32 resultsRoot,
        bytes32 fileHash,
        uint256 cumulativePayout,
        uint256 cumulativeFees,
        uint64 claimableAt
    );
    /// @notice `guardian` vetoed `epoch`; `lastEpoch` is now `epoch`, which may be re-posted.
    event EpochVetoed(uint256 indexed epoch, address indexed guardian);

    /// @notice The vault address is already `current`.
    error EpochVaultAlreadySet(address current);
    /// @notice The vault address has not been set.
    error EpochVaultNotSet();
    /// @notice An address argument was zero.
    error EpochZeroAddress();
    /// @notice `expected` is the epoch that may be posted now; `got` was given.
    error EpochOutOfOrder(uint256 expected, uint256 got);
    /// @notice The earnings root or the results root was zero.
    error EpochEmptyRoot();
    /// @notice Cumulative payout or fees of `epoch` are below the previous epoch's.
    error EpochTotalsDecreased(uint256 epoch);
    /// @notice Payout plus fees (`required`) exceed what the vault has `redeemed`.
    error EpochUnderfunded(uint256 required, uint256 redeemed);
    /// @notice `epoch` has not been posted.
    error EpochUnknown(uint256 epoch);
    /// @notice The challenge window of `epoch` closed at `claimableAt`.
    error EpochWindowOver(uint256 epoch, uint64 claimableAt);
    /// @notice `epoch` is already vetoed.
    error EpochAlreadyVetoed(uint256 epoch);

    /// @param admin Receives DEFAULT_ADMIN_ROLE, SETTLER_ROLE and GUARDIAN_ROLE.
    /// @param challengeWindow_ Seconds before a posted epoch becomes final.
    constructor(address admin, uint64 challengeWindow_) {
        if (admin == address(0)) revert EpochZeroAddress();
        challengeWindow = challengeWindow_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(SETTLER_ROLE, admin);
        _grantRole(GUARDIAN_ROLE, admin);
    }

    /// @notice Sets the PaymentVault; only admin, only once.
    /// @param vault_ The vault contract.
    function setVault(address vault_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (vault != address(0)) revert EpochVaultAlreadySet(vault);
        if (vault_ == address(0)) revert EpochZeroAddress();
        vault = vault_;
        emit VaultSet(vault_);
    }

    /// @notice Posts epoch `epoch`: lastEpoch + 1 when lastEpoch is not vetoed, or lastEpoch itself when it is
    /// (a re-post replaces the vetoed record and gets a fresh window); only SETTLER_ROLE.
    /// @param epoch Epoch number.
    /// @param root StandardMerkleTree root of (account, cumulativeAmount) earnings leaves.
    /// @param resultsRoot StandardMerkleTree root of (jobId, modelHash, inputHash, fingerprint, resultHash)
    /// consensus leaves.
    /// @param fileHash Hash of the published epoch file.
    /// @param cumulativePayout Total owed to accounts through this epoch.
    /// @param cumulativeFees Total owed to the treasury through this epoch.
    function postEpoch(
        uint256 epoch,
        bytes32 root,
        bytes32 resultsRoot,
        bytes32 fileHash,
        uint256 cumulativePayout,
        uint256 cumulativeFees
    ) external onlyRole(SETTLER_ROLE) {
        uint256 last = _head.lastEpoch;
        uint256 expected = _epochs[last].vetoed ? last : last + 1;
        if (epoch != expected) revert EpochOutOfOrder(expected, epoch);
        if (root == bytes32(0) || resultsRoot == bytes32(0)) revert EpochEmptyRoot();
        EpochRecord storage p = _epochs[epoch - 1];
        if (cumulativePayout < p.cumulativePayout || cumulativeFees < p.cumulativeFees) revert EpochTotalsDecreased(epoch);
        if (vault == address(0)) revert EpochVaultNotSet();
        uint256 redeemed = IPaymentVault(vault).totalRedeemed();
        if (cumulativePayout + cumulativeFees > redeemed) revert EpochUnderfunded(cumulativePayout + cumulativeFees, redeemed);
        uint64 claimableAt = uint64(block.timestamp) + challengeWindow;
        _epochs[epoch] = EpochRecord({
            root: root,
            resultsRoot: resultsRoot,
            fileHash: fileHash,
            cumulativePayout: SafeCast.toUint128(cumulativePayout),
            postedAt: SafeCast.toUint48(block.timestamp),
            claimableAt: claimableAt,
            vetoed: false,
            cumulativeFees: cumulativeFees
        });
        _head.lastEpoch = SafeCast.toUint64(epoch);
        emit EpochPosted(epoch, root, resultsRoot, fileHash, cumulativePayout, cumulativeFees, claimableAt);
    }

    /// @notice Vetoes `epoch` during its challenge window; only GUARDIAN_ROLE. Later epochs (still in their
    /// windows) become void and `lastEpoch` becomes `epoch`, which the settler may then re-post.
    /// @param epoch A posted epoch in its challenge window.
    function veto(uint256 epoch) external onlyRole(GUARDIAN_ROLE) {
        if (epoch == 0 || epoch > _head.lastEpoch) revert EpochUnknown(epoch);
        EpochRecord storage e = _epochs[epoch];
        if (block.timestamp >= e.claimableAt) revert EpochWindowOver(epoch, e.claimableAt);
        if (e.vetoed) revert EpochAlreadyVetoed(epoch);
        e.vetoed = true;
        _head.lastEpoch = uint64(epoch); // epoch <= lastEpoch, a uint64
        emit EpochVetoed(epoch, msg.sender);
    }

    /// @notice Last posted epoch (0 before the first; the first epoch is 1). Records above it are void.
    /// @return The epoch number.
    function lastEpoch() external view returns (uint256) {
        return _head.lastEpoch;
    }

    /// @notice The record of epoch `epoch` (all zero if never posted; records above `lastEpoch` are void).
    /// @param epoch Epoch number.
    /// @return root Earnings root.
    /// @return resultsRoot Results root.
    /// @return fileHash Hash of the published epoch file.
    /// @return cumulativePayout Total owed to accounts through this epoch.
    /// @return cumulativeFees Total owed to the treasury through this epoch.
    /// @return postedAt When it was posted.
    /// @return claimableAt When it becomes final unless vetoed.
    /// @return vetoed Whether the guardian vetoed it.
    function epochs(uint256 epoch)
        external
        view
        returns (
            bytes32 root,
            bytes32 resultsRoot,
            bytes32 fileHash,
            uint256 cumulativePayout,
            uint256 cumulativeFees,
            uint64 postedAt,
            uint64 claimableAt,
            bool vetoed
        )
    {
        EpochRecord storage e = _epochs[epoch];
        return (e.root, e.resultsRoot, e.fileHash, e.cumulativePayout, e.cumulativeFees, e.postedAt, e.claimableAt, e.vetoed);
    }

    /// @inheritdoc IEpochSettlement
    function isFinalized(uint256 epoch) public view returns (bool) {
        if (epoch == 0 || epoch > _head.lastEpoch) return false;
        EpochRecord storage e = _epochs[epoch];
        return !e.vetoed && block.timestamp >= e.claimableAt;
    }

    /// @inheritdoc IEpochSettlement
    /// @dev False for an epoch that is not posted (0, or above lastEpoch).
    function verifyResult(
        uint256 epoch,
        bytes32 jobId,
        bytes32 modelHash,
        bytes32 inputHash,
        bytes32 fingerprint,
        bytes32 resultHash,
        bytes32[] calldata proof
    ) external view returns (bool) {
        if (epoch == 0 || epoch > _head.lastEpoch) return false;
        bytes32 leaf = SettlementMerkle.resultLeaf(jobId, modelHash, inputHash, fingerprint, resultHash);
        return MerkleProof.verifyCalldata(proof, _epochs[epoch].resultsRoot, leaf);
    }
}
