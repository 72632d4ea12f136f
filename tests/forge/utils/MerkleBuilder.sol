// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title MerkleBuilder
/// @notice Root and proofs of a small tree that OpenZeppelin MerkleProof (sorted pairs) verifies, built from
/// already hashed leaves. An odd node at the end of a layer moves up unpaired. The shape differs from
/// StandardMerkleTree's array layout, but MerkleProof accepts any tree built with the same commutative hash.
library MerkleBuilder {
    /// @notice The root of `leaves` (at least one).
    function root(bytes32[] memory leaves) internal pure returns (bytes32) {
        bytes32[] memory layer = leaves;
        while (layer.length > 1) layer = _up(layer);
        return layer[0];
    }

    /// @notice The proof of `leaves[index]`.
    function proof(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32[] memory out) {
        bytes32[] memory path = new bytes32[](8);
        uint256 n;
        bytes32[] memory layer = leaves;
        while (layer.length > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < layer.length) path[n++] = layer[sibling];
            layer = _up(layer);
            index /= 2;
        }
        out = new bytes32[](n);
        for (uint256 i; i < n; ++i) out[i] = path[i];
    }

    function _up(bytes32[] memory layer) private pure returns (bytes32[] memory next) {
        next = new bytes32[]((layer.length + 1) / 2);
        for (uint256 i; i < next.length; ++i) {
            uint256 l = 2 * i;
            next[i] = l + 1 < layer.length ? _hashPair(layer[l], layer[l + 1]) : layer[l];
        }
    }

    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32) {
        return a < b ? keccak256(abi.encodePacked(a, b)) : keccak256(abi.encodePacked(b, a));
    }
}
