"""Merkle trees compatible with OpenZeppelin's ``StandardMerkleTree`` (@openzeppelin/merkle-tree).

Leaf: ``keccak256(keccak256(abi.encode(address account, uint256 cumulativeAmount)))`` (the
double hash keeps a 64-byte internal node from passing as a leaf). Leaves are sorted by hash,
laid out as a complete binary tree in an array (leaves at the end, in reverse order), and
pairs are hashed sorted, which is what OpenZeppelin's ``MerkleProof`` verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from protocol.errors import ProofError


def leaf_hash(account: str, cumulative_amount: int) -> bytes:
    inner = keccak(
        abi_encode(["address", "uint256"], [to_checksum_address(account), cumulative_amount])
    )
    return bytes(keccak(inner))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return bytes(keccak(a + b if a < b else b + a))


@dataclass(frozen=True)
class Tree:
    nodes: tuple[bytes, ...]
    values: tuple[tuple[str, int], ...]
    leaf_index: dict[str, int]  # account (checksummed) -> node index

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def proof(self, account: str) -> list[bytes]:
        try:
            index = self.leaf_index[to_checksum_address(account)]
        except KeyError:
            raise ProofError(f"{account} has no leaf in this tree") from None
        proof = []
        while index > 0:
            sibling = index - 1 if index % 2 == 0 else index + 1
            proof.append(self.nodes[sibling])
            index = (index - 1) // 2
        return proof

    def amount_of(self, account: str) -> int:
        index = self.leaf_index.get(to_checksum_address(account))
        if index is None:
            return 0
        return self.values[len(self.nodes) - 1 - index][1]


def build(values: Sequence[tuple[str, int]]) -> Tree:
    """Build the tree of (account, cumulative amount) leaves, one leaf per account."""
    if not values:
        raise ProofError("a Merkle tree needs at least one leaf")
    accounts = [to_checksum_address(a) for a, _ in values]
    if len(set(accounts)) != len(accounts):
        raise ProofError("an account may appear once in an epoch tree")
    hashed = sorted(
        (
            (leaf_hash(a, amt), (a, amt))
            for a, amt in zip(accounts, (v for _, v in values), strict=True)
        ),
        key=lambda item: item[0],
    )
    n = len(hashed)
    nodes: list[bytes] = [b""] * (2 * n - 1)
    index: dict[str, int] = {}
    for i, (h, (account, _)) in enumerate(hashed):
        nodes[len(nodes) - 1 - i] = h
        index[account] = len(nodes) - 1 - i
    for i in range(len(nodes) - 1 - n, -1, -1):
        nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
    return Tree(tuple(nodes), tuple(v for _, v in hashed), index)


def verify(root: bytes, account: str, cumulative_amount: int, proof: Sequence[bytes]) -> bool:
    node = leaf_hash(account, cumulative_amount)
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
