// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {MerkleBuilder} from "../utils/MerkleBuilder.sol";
import {Ghosts} from "./Ghosts.sol";

/// @title EpochModel
/// @notice What the settler knows about each posted epoch: every contributor's cumulative earnings leaf and the
/// results tree (one consensus result per job and fingerprint class), with the roots and proofs built here.
abstract contract EpochModel is Ghosts {
    /// @notice One results-tree leaf: the consensus result hash of a job's fingerprint class on its model and input.
    struct Result { bytes32 jobId; bytes32 modelHash; bytes32 inputHash; bytes32 fingerprint; bytes32 consensus; }

    uint256 internal constant JOBS = 3;

    /// @notice Cumulative earnings of contributor `i` in the tree of epoch `epoch` (as last posted).
    mapping(uint256 epoch => mapping(uint256 i => uint256)) public earnings;
    mapping(uint256 epoch => mapping(uint256 j => Result)) internal _results;
    uint256 private _postNonce;

    /// @notice Leaf encoding of the earnings tree, written out again (OZ StandardMerkleTree, (address, uint256)).
    function earningsLeaf(address account, uint256 amount) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    /// @notice Leaf encoding of the results tree, written out again (OZ StandardMerkleTree,
    /// (jobId, modelHash, inputHash, fingerprint, resultHash), all bytes32).
    function resultLeaf(Result memory r) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(r.jobId, r.modelHash, r.inputHash, r.fingerprint, r.consensus))));
    }

    /// @dev Writes the model of `epoch`: the predecessor's leaves plus `payoutIncrease` split by `splitSeed`, and
    /// JOBS fresh jobs. Returns both roots.
    function _modelEpoch(uint256 epoch, uint256 payoutIncrease, uint256 splitSeed)
        internal
        returns (bytes32 root, bytes32 resultsRoot)
    {
        uint256 left = payoutIncrease;
        for (uint256 i; i < CONTRIBUTORS; ++i) {
            uint256 share = i + 1 == CONTRIBUTORS ? left : uint256(keccak256(abi.encode(splitSeed, i))) % (left + 1);
            left -= share;
            earnings[epoch][i] = earnings[epoch - 1][i] + share;
        }
        uint256 nonce = ++_postNonce;
        for (uint256 j; j < JOBS; ++j) {
            bytes32 jobId = keccak256(abi.encode("job", nonce, j));
            _results[epoch][j] = Result(
                jobId,
                keccak256("model"),
                keccak256(abi.encode("input", jobId)),
                keccak256(abi.encode("fingerprint", j % 2)),
                keccak256(abi.encode("result", jobId))
            );
        }
        return (MerkleBuilder.root(_earningsLeaves(epoch)), MerkleBuilder.root(_resultLeaves(epoch)));
    }

    function _earningsLeaves(uint256 epoch) internal view returns (bytes32[] memory leaves) {
        leaves = new bytes32[](CONTRIBUTORS);
        for (uint256 i; i < CONTRIBUTORS; ++i) leaves[i] = earningsLeaf(contributor(i), earnings[epoch][i]);
    }

    function _resultLeaves(uint256 epoch) internal view returns (bytes32[] memory leaves) {
        leaves = new bytes32[](JOBS);
        for (uint256 j; j < JOBS; ++j) leaves[j] = resultLeaf(_results[epoch][j]);
    }

    function _earningsProof(uint256 epoch, uint256 i) internal view returns (bytes32[] memory) {
        return MerkleBuilder.proof(_earningsLeaves(epoch), i);
    }

    function _resultProof(uint256 epoch, uint256 j) internal view returns (bytes32[] memory) {
        return MerkleBuilder.proof(_resultLeaves(epoch), j);
    }
}
