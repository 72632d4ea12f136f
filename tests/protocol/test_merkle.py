"""protocol.merkle against itself (every proof verifies, tampered ones do not) and against
OpenZeppelin's StandardMerkleTree (same leaf hashes, root and proofs), computed by one real
``node tests/protocol/oz_tree.js`` subprocess per test over every generated example."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_abi.exceptions import EncodingError
from eth_utils import keccak, to_checksum_address
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol import merkle
from protocol.errors import ProofError

REPO_ROOT = Path(__file__).resolve().parents[2]
OZ_SCRIPT = Path(__file__).resolve().parent / "oz_tree.js"
MAX_UINT256 = 2**256 - 1

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
amounts = st.one_of(
    st.integers(0, MAX_UINT256),
    st.sampled_from([0, 1, 2**64, 2**128 - 1, MAX_UINT256]),
)
value_sets = st.lists(
    st.tuples(addresses, amounts), min_size=1, max_size=60, unique_by=lambda v: v[0]
)
Values = list[tuple[str, int]]


def _openzeppelin(trees: list[Values]) -> list[dict[str, Any]]:
    """Root, leaf hashes and proofs (input order) of each tree, by @openzeppelin/merkle-tree."""
    node = shutil.which("node")
    assert node is not None, "node is needed for the OpenZeppelin reference trees"
    payload = json.dumps([[[a, str(amt)] for a, amt in values] for values in trees])
    done = subprocess.run(
        [node, str(OZ_SCRIPT)],
        input=payload,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(result) == len(trees)
    return result


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _fold(node: bytes, proof: list[bytes]) -> bytes:
    for sibling in proof:
        node = merkle.hash_pair(node, sibling)
    return node


def test_proofs_verify_and_match_openzeppelin() -> None:
    cases: list[tuple[Values, merkle.Tree]] = []

    @settings(max_examples=80, deadline=None)
    @given(values=value_sets, outsider=addresses)
    def check(values: Values, outsider: str) -> None:
        assume(outsider not in {a for a, _ in values})
        tree = merkle.build(values)
        accounts = [a for a, _ in values]
        for i, (account, amount) in enumerate(values):
            proof = tree.proof(account)
            assert merkle.verify(tree.root, account, amount, proof)
            assert merkle.verify(tree.root, account.upper().replace("0X", "0x"), amount, proof)
            assert tree.amount_of(account) == amount
            assert not merkle.verify(tree.root, account, amount ^ 1, proof)
            assert not merkle.verify(tree.root, account, (amount + 2**255) % 2**256, proof)
            assert not merkle.verify(tree.root, outsider, amount, proof)
            if len(values) > 1:
                other = accounts[(i + 1) % len(accounts)]
                assert not merkle.verify(tree.root, other, amount, proof)
                assert not merkle.verify(tree.root, account, amount, proof[:-1])
            assert not merkle.verify(tree.root, account, amount, [*proof, tree.root])
        assert tree.amount_of(outsider) == 0
        with pytest.raises(ProofError):
            tree.proof(outsider)
        cases.append((values, tree))

    check()
    assert cases
    reference = _openzeppelin([values for values, _ in cases])
    for (values, tree), oz in zip(cases, reference, strict=True):
        assert oz["root"] == _hex(tree.root), values
        for (account, amount), leaf, proof in zip(
            values, oz["leafHashes"], oz["proofs"], strict=True
        ):
            assert leaf == _hex(merkle.leaf_hash(account, amount))
            assert proof == [_hex(p) for p in tree.proof(account)], (values, account)


def test_fixed_edge_trees_match_openzeppelin() -> None:
    """Sizes around powers of two, and the extreme amounts, against the reference."""
    trees: list[Values] = []
    for size in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 60):
        trees.append(
            [("0x" + f"{i + 1:040x}", (i * 0x9E3779B97F4A7C15) % 2**256) for i in range(size)]
        )
    trees.append([("0x" + "ff" * 20, MAX_UINT256), ("0x" + "00" * 19 + "01", 0)])
    reference = _openzeppelin(trees)
    for values, oz in zip(trees, reference, strict=True):
        tree = merkle.build(values)
        assert oz["root"] == _hex(tree.root)
        assert [[_hex(p) for p in tree.proof(a)] for a, _ in values] == oz["proofs"]
    single = merkle.build(trees[0])
    assert single.root == merkle.leaf_hash(*trees[0][0])
    assert single.proof(trees[0][0][0]) == []


def test_leaf_hash_layout() -> None:
    """leaf = keccak256(keccak256(abi.encode(address, uint256))), by hand."""
    account, amount = "0x" + "ab" * 20, 2**200 + 3
    encoded = bytes(12) + bytes.fromhex("ab" * 20) + amount.to_bytes(32, "big")
    assert abi_encode(["address", "uint256"], [to_checksum_address(account), amount]) == encoded
    assert merkle.leaf_hash(account, amount) == keccak(keccak(encoded))
    assert merkle.hash_pair(b"\x01" * 32, b"\x02" * 32) == keccak(b"\x01" * 32 + b"\x02" * 32)
    assert merkle.hash_pair(b"\x02" * 32, b"\x01" * 32) == keccak(b"\x01" * 32 + b"\x02" * 32)


def test_internal_node_presented_as_a_leaf_does_not_verify() -> None:
    values = [("0x" + f"{i + 1:040x}", 1000 + i) for i in range(9)]
    tree = merkle.build(values)
    n_internal = len(tree.nodes) - len(values)
    assert n_internal == len(values) - 1
    checked = 0
    for index in range(1, n_internal):  # every internal node but the root
        path = []
        i = index
        while i > 0:
            path.append(tree.nodes[i - 1 if i % 2 == 0 else i + 1])
            i = (i - 1) // 2
        node = tree.nodes[index]
        assert _fold(node, path) == tree.root  # the node with its upper path reaches the root
        left, right = tree.nodes[2 * index + 1], tree.nodes[2 * index + 2]
        preimage = min(left, right) + max(left, right)  # 64 bytes, as abi.encode(addr, uint)
        assert keccak(preimage) == node
        # a single-hashed leaf of that preimage would be the node itself and verify; the
        # double hash makes it another value, which does not
        assert _fold(keccak(keccak(preimage)), path) != tree.root
        posing = ("0x" + preimage[12:32].hex(), int.from_bytes(preimage[32:], "big"))
        assert not merkle.verify(tree.root, posing[0], posing[1], path)
        for account, amount in values:  # no real leaf's values pass with the short path
            assert not merkle.verify(tree.root, account, amount, path)
        checked += 1
    assert checked == n_internal - 1


def test_duplicate_accounts_are_refused() -> None:
    account = "0x" + "ab" * 20
    with pytest.raises(ProofError, match="once"):
        merkle.build([(account, 1), (account, 2)])
    with pytest.raises(ProofError, match="once"):  # the same account in two spellings
        merkle.build([(account, 1), ("0x" + "AB" * 20, 1), ("0x" + "cd" * 20, 3)])
    with pytest.raises(ProofError, match="once"):
        merkle.build([(account, 1), (to_checksum_address(account), 1)])


def test_empty_tree_is_refused() -> None:
    with pytest.raises(ProofError):
        merkle.build([])


def test_results_tree_matches_openzeppelin() -> None:
    """The results tree (bytes32 jobId, fingerprint, resultHash) is OpenZeppelin's too, and
    a leaf that changes any one field (job, model, input, class, result) does not verify."""
    rng = random.Random(7)
    leaves = [merkle.ResultLeaf(*(rng.randbytes(32) for _ in range(5))) for _ in range(23)]
    tree = merkle.build_results(leaves)
    rows = [[_hex(x) for x in dataclasses.astuple(leaf)] for leaf in leaves]
    body = {"types": merkle.RESULTS_TYPES, "trees": [rows]}
    done = subprocess.run(
        ["node", str(OZ_SCRIPT)],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    (reference,) = json.loads(done.stdout)
    assert reference["root"] == _hex(tree.root)
    for i, leaf in enumerate(leaves):
        proof = tree.proof_of(leaf.key)
        assert [_hex(p) for p in proof] == reference["proofs"][i]
        assert reference["leafHashes"][i] == _hex(leaf.hash())
        assert merkle.verify_leaf(tree.root, leaf.hash(), proof)
        for field in ("job_id", "model_hash", "input_hash", "fingerprint", "result_hash"):
            changed = dataclasses.replace(leaf, **{field: rng.randbytes(32)})
            assert not merkle.verify_leaf(tree.root, changed.hash(), proof)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.binary(min_size=0, max_size=40), min_size=5, max_size=5))
def test_result_leaf_hash_is_the_abi_encoding_of_five_bytes32(values: list[bytes]) -> None:
    """Five full bytes32 are hashed from their concatenation (what ``abi.encode`` gives
    them); a short value is padded and a long one refused, as eth_abi does."""
    leaf = merkle.ResultLeaf(*values)
    if any(len(v) > 32 for v in values):
        with pytest.raises(EncodingError, match="bytes32"):
            leaf.hash()
        return
    assert leaf.hash() == keccak(keccak(abi_encode(merkle.RESULTS_TYPES, values)))
