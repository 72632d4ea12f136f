"""Chain actions that the index and projection tests script on a real node: an epoch whose
results tree holds consensus leaves to slash against (and, where asked, earnings to claim),
and a slash with a worker's own signed attestation of another result."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3.types import RPCEndpoint

from ledger.chain.client import ChainClient
from protocol import merkle
from protocol.contracts import EpochRecord
from protocol.eip712 import Attestation, sign_attestation

MODEL, INPUT, FINGERPRINT = (bytes([n]) * 32 for n in (1, 2, 3))
CONSENSUS, WRONG = b"\xaa" * 32, b"\xbb" * 32


def job(n: int) -> bytes:
    return n.to_bytes(32, "big")


@dataclass(frozen=True)
class Posted:
    epoch: int
    results: merkle.Tree
    earnings: merkle.Tree | None


def post_epoch(
    admin: ChainClient,
    jobs: Sequence[bytes],
    earnings: Sequence[tuple[str, int]] = (),
    fees_wei: int = 0,
) -> Posted:
    """The next epoch: a consensus leaf (CONSENSUS) for each of ``jobs``, the earnings
    tree of ``earnings`` (a placeholder root if none) and ``fees_wei``; the vault must have
    redeemed their total."""
    settlement = admin.settlement.functions
    last = int(admin.call(settlement.lastEpoch()))
    vetoed = EpochRecord.from_call(admin.call(settlement.epochs(last))).vetoed
    epoch = last if vetoed else last + 1
    results = merkle.build_results(
        [merkle.ResultLeaf(j, MODEL, INPUT, FINGERPRINT, CONSENSUS) for j in jobs]
    )
    tree = merkle.build(list(earnings)) if earnings else None
    root = tree.root if tree else b"\x01" * 32
    payout = sum(amount for _, amount in earnings)
    admin.transact(
        settlement.postEpoch(epoch, root, results.root, b"\x00" * 32, payout, fees_wei),
        "postEpoch",
    )
    return Posted(epoch, results, tree)


def wait_finalized(admin: ChainClient, epoch: int, timeout_s: float = 30.0) -> None:
    """Mine empty blocks until chain time passes the epoch's challenge window."""
    deadline = time.monotonic() + timeout_s
    while not admin.call(admin.settlement.functions.isFinalized(epoch)):
        assert time.monotonic() < deadline, f"epoch {epoch} never finalized"
        admin.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        time.sleep(0.1)


def slash(sender: ChainClient, worker_key: str, posted: Posted, job_id: bytes) -> Any:
    """Slash the worker of ``worker_key`` for signing WRONG where ``posted`` holds CONSENSUS."""
    att = Attestation(job_id, MODEL, INPUT, WRONG, FINGERPRINT)
    sig = sign_attestation(
        sender.deployment.registry_domain, att, bytes.fromhex(worker_key.removeprefix("0x"))
    )
    proof = posted.results.proof_of((job_id, FINGERPRINT))
    return sender.transact(
        sender.registry.functions.slash(
            (job_id, MODEL, INPUT, WRONG, FINGERPRINT), sig, posted.epoch, CONSENSUS, proof
        ),
        "slash",
    )
