"""Merkle trees compatible with OpenZeppelin's ``StandardMerkleTree`` (@openzeppelin/merkle-tree).

Two trees per epoch, each leaf double-hashed (a 64-byte internal node can never pass as a
leaf), leaves sorted by hash, laid out as a complete binary tree in an array (leaves at the
end, in reverse order), pairs hashed sorted, which is what OpenZeppelin's ``MerkleProof``
verifies:

- earnings: ``keccak256(keccak256(abi.encode(address account, uint256 cumulativeAmount)))``;
- results: ``keccak256(keccak256(abi.encode(bytes32 jobId, bytes32 modelHash,
  bytes32 inputHash, bytes32 fingerprint, bytes32 resultHash)))``, one leaf per accepted job
  and consensus fingerprint class; a slash proves that a worker signed another result for the
  same job, model, input and class. (Model and input are in the leaf because job ids come
  from vouchers: without them an operator could frame a worker by giving it another input.)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from protocol.errors import ProofError
from protocol.keccak import keccak

EARNINGS_TYPES = ["address", "uint256"]
RESULTS_TYPES = ["bytes32", "bytes32", "bytes32", "bytes32", "bytes32"]


def _leaf(types: list[str], values: Sequence[Any]) -> bytes:
    return keccak(keccak(abi_encode(types, list(values))))


def leaf_hash(account: str, cumulative_amount: int) -> bytes:
    return _leaf(EARNINGS_TYPES, [to_checksum_address(account), cumulative_amount])


@dataclass(frozen=True)
class ResultLeaf:
    """One accepted job's consensus in one fingerprint class."""

    job_id: bytes
    model_hash: bytes
    input_hash: bytes
    fingerprint: bytes
    result_hash: bytes

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.job_id, self.fingerprint)

    def hash(self) -> bytes:
        values = (self.job_id, self.model_hash, self.input_hash, self.fingerprint, self.result_hash)
        if all(len(v) == 32 for v in values):  # abi.encode of five full bytes32: their bytes
            return keccak(keccak(b"".join(values)))
        return _leaf(RESULTS_TYPES, list(values))  # pads short values, refuses long ones


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a < b else b + a)


@dataclass(frozen=True)
class Tree:
    """A built tree; ``leaf_index`` maps each leaf's key to its node index."""

    nodes: tuple[bytes, ...]
    leaf_index: dict[Hashable, int]
    amounts: dict[Hashable, int]

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def _proof_at(self, index: int) -> list[bytes]:
        proof = []
        while index > 0:
            proof.append(self.nodes[index - 1 if index % 2 == 0 else index + 1])
            index = (index - 1) // 2
        return proof

    def proof(self, account: str) -> list[bytes]:
        """The proof of an earnings leaf."""
        return self.proof_of(to_checksum_address(account))

    def proof_of(self, key: Hashable) -> list[bytes]:
        try:
            return self._proof_at(self.leaf_index[key])
        except KeyError:
            raise ProofError(f"{key} has no leaf in this tree") from None

    def amount_of(self, account: str) -> int:
        return self.amounts.get(to_checksum_address(account), 0)


def _build(leaves: Sequence[tuple[Hashable, bytes]], amounts: dict[Hashable, int]) -> Tree:
    if not leaves:
        raise ProofError("a Merkle tree needs at least one leaf")
    if len({key for key, _ in leaves}) != len(leaves):
        raise ProofError("a key may appear once in a tree")
    ordered = sorted(leaves, key=lambda item: item[1])
    n = len(ordered)
    nodes: list[bytes] = [b""] * (2 * n - 1)
    index: dict[Hashable, int] = {}
    for i, (key, h) in enumerate(ordered):
        nodes[len(nodes) - 1 - i] = h
        index[key] = len(nodes) - 1 - i
    for i in range(len(nodes) - 1 - n, -1, -1):
        nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2])
    return Tree(tuple(nodes), index, amounts)


def build(values: Sequence[tuple[str, int]]) -> Tree:
    """The earnings tree of (account, cumulative amount), one leaf per account."""
    accounts = [to_checksum_address(a) for a, _ in values]
    if len(set(accounts)) != len(accounts):
        raise ProofError("an account may appear once in an epoch tree")
    pairs = [(a, v) for a, (_, v) in zip(accounts, values, strict=True)]
    return _build([(a, leaf_hash(a, v)) for a, v in pairs], dict(pairs))


def build_results(leaves: Sequence[ResultLeaf]) -> Tree:
    """The results tree, keyed by (job id, fingerprint)."""
    return _build([(leaf.key, leaf.hash()) for leaf in leaves], {})


def verify_leaf(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root


def verify(root: bytes, account: str, cumulative_amount: int, proof: Sequence[bytes]) -> bool:
    return verify_leaf(root, leaf_hash(account, cumulative_amount), proof)
