// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IEpochSettlement
/// @notice The part of EpochSettlement that StakeRegistry relies on to check slashing evidence.
interface IEpochSettlement {
    /// @notice Whether `epoch` is posted, not vetoed and past its challenge window.
    /// @param epoch Epoch number.
    /// @return True if finalized.
    function isFinalized(uint256 epoch) external view returns (bool);

    /// @notice Whether the results tree of posted epoch `epoch` holds the leaf
    /// (jobId, modelHash, inputHash, fingerprint, resultHash).
    /// @dev Does not check finality; callers check `isFinalized` themselves.
    /// @param epoch Epoch number.
    /// @param jobId The job.
    /// @param modelHash The model the consensus was reached on.
    /// @param inputHash The input the consensus was reached on.
    /// @param fingerprint The fingerprint class.
    /// @param resultHash The consensus result hash of that class.
    /// @param proof StandardMerkleTree proof of the leaf.
    /// @return True if the proof verifies against the epoch's results root.
    function verifyResult(
        uint256 epoch,
        bytes32 jobId,
        bytes32 modelHash,
        bytes32 inputHash,
        bytes32 fingerprint,
        bytes32 resultHash,
        bytes32[] calldata proof
    ) external view returns (bool);
}
