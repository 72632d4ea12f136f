// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title SettlementMerkle
/// @notice Leaf encodings of the two per-epoch trees, as OpenZeppelin StandardMerkleTree builds them.
/// @dev Each leaf is hashed twice, so a 64-byte internal node can never be presented as a leaf.
library SettlementMerkle {
    /// @notice Leaf of the earnings tree: (address account, uint256 cumulativeAmount).
    /// @param account The earning account.
    /// @param cumulativeAmount Its cumulative earnings through the epoch, in token wei.
    /// @return The leaf hash.
    function earningsLeaf(address account, uint256 cumulativeAmount) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))));
    }

    /// @notice Leaf of the results tree: (bytes32 jobId, bytes32 modelHash, bytes32 inputHash, bytes32 fingerprint,
    /// bytes32 resultHash), one per accepted job and fingerprint class, holding that class's consensus result hash
    /// on that very model and input.
    /// @dev The model and input are committed so that a slash can only use a consensus reached on the model and
    /// input the slashed worker attested to (job ids derive from vouchers, not from inputs).
    /// @param jobId The job.
    /// @param modelHash The model the consensus was reached on.
    /// @param inputHash The input the consensus was reached on.
    /// @param fingerprint The hardware/software fingerprint class.
    /// @param resultHash The consensus result hash of that class.
    /// @return The leaf hash.
    function resultLeaf(bytes32 jobId, bytes32 modelHash, bytes32 inputHash, bytes32 fingerprint, bytes32 resultHash)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(jobId, modelHash, inputHash, fingerprint, resultHash))));
    }
}
