"""Slashing with evidence, end to end on a real Hardhat node: a worker that signed a wrong
result in the consensus's fingerprint class is slashed once the epoch is finalized; an
honest worker, a vote of another fingerprint class and a second run are never slashed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account
from ledger_support import add_worker, fresh_ledger
from sqlmodel import select
from web3.types import RPCEndpoint

from inferledger import actors
from ledger.chain.client import ChainClient
from ledger.config import REPO_ROOT
from ledger.context import Context
from ledger.db import session_scope
from ledger.epochs import close_epoch
from ledger.jobs import JobRequest, create_job
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Slash, SlashStatus
from ledger.reconcile import reconcile_batch
from ledger.slashing import submit_slashes
from protocol import tensors
from protocol.eip712 import Attestation, Voucher, sign_attestation, sign_voucher
from protocol.fingerprint import Fingerprint

TOKEN = 10**18
ARTIFACTS = REPO_ROOT / "artifacts"
MANIFEST = json.loads((REPO_ROOT / "models" / "digits-cnn" / "manifest.json").read_text())
PRICE = int(MANIFEST["price_per_row_wei"])
STAKE = 100 * TOKEN
SLASH_BPS = 1_000
CLASS_F = Fingerprint("1.0", "CPUExecutionProvider", "avx2-fma", "all", 1)
CLASS_G = Fingerprint("1.0", "CPUExecutionProvider", "sse4.2", "all", 1)


@pytest.fixture
def world(chain: Any, sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Context, list[str]]]:
    """Fresh contracts; three contributors staked, each with a registered device key."""
    ctx = fresh_ledger(
        chain,
        sqlite_url,
        tmp_path,
        deposit_wei=TOKEN,
        mint_to=tuple(chain.keys[3:6]),
        deploy_args={"slash_bps": SLASH_BPS},
        replicas=3,
        max_replicas=3,
    )
    deployment = ctx.deployment
    device_keys = ["0x" + bytes(Account.create().key).hex() for _ in range(3)]
    with session_scope(ctx.engine) as session:
        for key, device in zip(chain.keys[3:6], device_keys, strict=True):
            contributor = ChainClient(chain.w3, deployment, ARTIFACTS, key)
            worker = actors.stake_and_register(contributor, STAKE, device)
            add_worker(session, worker, contributor.address)
    yield ctx, device_keys


def _answered_job(
    ctx: Context, chain: Any, n: int, devices: list[str], votes: list[tuple[str, Fingerprint]]
) -> str:
    """Client 1's n-th job with the three workers' signed votes (result tag, class)."""
    key = chain.keys[1]
    client = Account.from_key(key).address
    expiry = int(time.time()) + 7200
    sig = sign_voucher(
        ctx.deployment.vault_domain, Voucher(client, n * PRICE, expiry), bytes.fromhex(key[2:])
    )
    inputs = {"input": tensors.encode(np.full((1, 1, 8, 8), n / 16, dtype=np.float32))}
    by_worker = {Account.from_key(d).address: d for d in devices}
    with session_scope(ctx.engine) as session:
        job, _ = create_job(
            session,
            ctx,
            JobRequest(
                "0x" + MANIFEST["sha256"], inputs, client, n * PRICE, expiry, "0x" + sig.hex()
            ),
        )
        assignments = session.exec(
            select(Assignment).where(Assignment.job_id == job.id).order_by(Assignment.worker)
        ).all()
        for a, (tag, fp) in zip(assignments, votes, strict=True):
            result = bytes.fromhex(tag * 32)
            att = Attestation(
                bytes.fromhex(job.id[2:]),
                bytes.fromhex(job.model_hash[2:]),
                bytes.fromhex(job.input_hash[2:]),
                result,
                fp.digest(),
            )
            signature = sign_attestation(
                ctx.deployment.registry_domain, att, bytes.fromhex(by_worker[a.worker][2:])
            )
            a.status, a.result_hash, a.signature = (
                AssignmentStatus.SUBMITTED,
                "0x" + result.hex(),
                "0x" + signature.hex(),
            )
            a.fingerprint, a.fingerprint_json, a.outputs_json = (
                "0x" + fp.digest().hex(),
                fp.canonical().decode(),
                "{}",
            )
            session.add(a)
        stored = session.get(Job, job.id)  # every replica answered: ready to reconcile
        assert stored is not None
        stored.status = JobStatus.SUBMITTED
        return job.id


def _wait_finalized(ctx: Context, epoch: int) -> None:
    chain, deadline = ctx.chain, time.monotonic() + 30
    while not chain.call(chain.settlement.functions.isFinalized(epoch)):
        assert time.monotonic() < deadline, "the epoch never finalized"
        chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        time.sleep(0.2)


def test_slashing_wrong_vote_in_the_consensus_class_is_slashed_once(
    world: tuple[Context, list[str]], chain: Any
) -> None:
    ctx, devices = world
    job_a = _answered_job(
        ctx, chain, 1, devices, [("aa", CLASS_F), ("aa", CLASS_F), ("bb", CLASS_F)]
    )
    job_b = _answered_job(
        ctx, chain, 2, devices, [("cc", CLASS_F), ("cc", CLASS_F), ("dd", CLASS_G)]
    )
    with session_scope(ctx.engine) as session:
        report = reconcile_batch(session, ctx, 10)
    assert report.accepted == 2
    with session_scope(ctx.engine) as session:
        jobs = {j.id: j for j in session.exec(select(Job)).all()}
        wrong = session.exec(
            select(Assignment).where(
                Assignment.job_id == job_a, Assignment.result_hash == "0x" + "bb" * 32
            )
        ).one()
    assert (
        jobs[job_a].result_hash == "0x" + "aa" * 32 and jobs[job_b].result_hash == "0x" + "cc" * 32
    )
    outcome = close_epoch(ctx)
    assert outcome is not None
    registry = ctx.chain.registry.functions

    assert submit_slashes(ctx, 10) == []  # not finalized yet: nothing is slashable
    _wait_finalized(ctx, outcome.number)
    bonded_before = int(ctx.chain.call(registry.stakeOf(wrong.contributor)))
    pool_before = int(
        ctx.chain.call(ctx.chain.token.functions.balanceOf(ctx.chain.call(registry.slashPool())))
    )

    slashed = submit_slashes(ctx, 10)
    assert [(s.worker, s.job_id, s.status) for s in slashed] == [
        (wrong.worker, job_a, SlashStatus.SUBMITTED)
    ]
    expected = STAKE * SLASH_BPS // 10_000
    assert int(ctx.chain.call(registry.stakeOf(wrong.contributor))) == bonded_before - expected
    pool_after = int(
        ctx.chain.call(ctx.chain.token.functions.balanceOf(ctx.chain.call(registry.slashPool())))
    )
    assert pool_after - pool_before == expected
    assert ctx.chain.call(registry.jailed(wrong.worker)) is True
    assert ctx.chain.call(registry.isEligible(wrong.worker)) is False
    # the vote of another class in job B and every honest vote stay unslashed
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(Slash)).all()
        assert [r.job_id for r in rows] == [job_a]
        honest = session.exec(
            select(Assignment).where(Assignment.result_hash == "0x" + "aa" * 32)
        ).all()
    for vote in honest:
        assert ctx.chain.call(registry.jailed(vote.worker)) is False
        assert int(ctx.chain.call(registry.stakeOf(vote.contributor))) == STAKE
    # a second run finds nothing new and sends nothing
    gas = ctx.chain.gas_used
    assert submit_slashes(ctx, 10) == []
    assert ctx.chain.gas_used == gas
