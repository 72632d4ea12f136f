"""Adaptive replication through the API (``ledger.scheduler.adaptive``): workers earn trust
by agreeing with other contributors on replicated jobs; a trusted worker then runs jobs
alone, is paid the whole of the contributors' share, and its client gets a receipt of one
attestation; a spot-checked job is replicated whoever holds it, and a wrong answer there
ends the worker's trust. An epoch of lone and replicated jobs settles and passes the audit.

The spot-check rate is set per test: 0 (never checked, dev mode only) or 10,000 (always),
so each step's outcome is certain; the rate itself is drawn in tests/ledger/test_jobs.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from api_harness import ApiEnv, Contributor, samples
from sqlmodel import select

from inferledger.audit import Auditor, model_tolerances
from ledger import invariants, journal
from ledger.config import REPO_ROOT
from ledger.db import session_scope
from ledger.epochs import close_epoch
from ledger.models import Worker, WorkerTrust
from ledger.scheduler import agreed_streaks
from protocol import epochfile, tensors
from protocol.contracts import CONTRACT_NAMES, artifact
from protocol.pricing import split

TRUST_AFTER = 2
API_SETTINGS = {"trust_after": TRUST_AFTER, "spot_check_bps": 0, "reconcile_inline_max": 8}


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _streaks(env: ApiEnv) -> dict[str, tuple[int, int]]:
    """Each worker's (run of agreed replicated jobs, safety faults)."""
    with session_scope(env.ctx.engine) as session:
        workers = session.exec(select(Worker)).all()
        trust = agreed_streaks(session, [w.address for w in workers])
        return {w.address: (trust.get(w.address, 0), w.safety_faults) for w in workers}


def _earned(env: ApiEnv, c: Contributor) -> int:
    with session_scope(env.ctx.engine) as session:
        return journal.balance(session, journal.contributor_account(c.address))


_inputs_seen = 0


def _next_inputs() -> Any:
    global _inputs_seen
    _inputs_seen += 1
    return samples(1, start=_inputs_seen)


def _answer(env: ApiEnv, c: Contributor, job_id: str, *, wrong: bool = False) -> None:
    """``c`` answers its replica of ``job_id``: correctly, or (``wrong``) with other outputs,
    hashed and signed as an honest answer would be."""
    (mine,) = [a for a in env.pull(c) if a["job_id"] == job_id]
    outputs = None
    if wrong:
        inputs = {k: tensors.decode(v, max_bytes=1 << 20) for k, v in mine["inputs"].items()}
        right = env.model.run(inputs)
        outputs = {k: (v + np.float32(1.0)).astype(v.dtype) for k, v in right.items()}
    env.post_results(c, [env.result_item(mine, c.device, outputs=outputs)])


def _run(env: ApiEnv) -> tuple[dict[str, Any], list[str]]:
    """One job, every replica answering correctly: the decided job as its client reads it,
    and the workers it was assigned to."""
    job = env.submit_job(_next_inputs())
    holders = env.assigned(job["job_id"])
    for c in holders:
        _answer(env, c, job["job_id"])
    r = env.http.get(f"/v1/jobs/{job['job_id']}")
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    return dict(r.json()), [c.worker for c in holders]


def test_trust_is_earned_on_replicated_jobs_then_a_trusted_worker_runs_alone(
    ready: ApiEnv,
) -> None:
    env = ready
    by_worker = {c.worker: c for c in env.contributors}
    lone: dict[str, Any] | None = None
    for _ in range(20):  # three contributors, two replicas a job: trust comes within a few
        trusted_before = {w for w, (streak, _) in _streaks(env).items() if streak >= TRUST_AFTER}
        earned = {c.worker: _earned(env, c) for c in env.contributors}
        streaks = _streaks(env)
        job, first = _run(env)
        if len(first) == 1:
            lone = job
            break
        assert len(job["attestations"]) == 2
        assert not trusted_before & set(first), "a trusted worker was replicated unchecked"
    assert lone is not None, "no worker earned trust in 20 replicated jobs"
    (vote,) = lone["attestations"]
    assert vote["worker"] in trusted_before
    # the one contributor is paid the whole of the contributors' share of the price
    shares, _ = split(int(lone["price_wei"]), env.ctx.settings.fee_bps, [vote["contributor"]])
    worker = vote["worker"]
    assert _earned(env, by_worker[worker]) - earned[worker] == shares[vote["contributor"]]
    assert _streaks(env)[worker] == streaks[worker]  # a lone job proves nothing
    for c in env.contributors:  # each contributor sees its devices' runs
        (device,) = env.http.get(f"/v1/contributors/{c.address}/devices").json()
        assert device["agreed_streak"] == _streaks(env)[c.worker][0]
    with session_scope(env.ctx.engine) as session:
        invariants.check_full(session)


def test_a_wrong_answer_on_a_spot_check_ends_the_workers_trust(ready: ApiEnv, setting: Any) -> None:
    env = ready
    setting("spot_check_bps", 10_000)  # every job checked: replicated whoever is trusted
    streaks = _streaks(env)
    with session_scope(env.ctx.engine) as session:  # each has earned trust (as in the test above)
        for c in env.contributors:
            streak = max(streaks[c.worker][0], TRUST_AFTER)
            session.merge(WorkerTrust(address=c.worker, agreed_streak=streak))
    job = env.submit_job(_next_inputs())
    holders = env.assigned(job["job_id"])
    assert len(holders) == 2  # spot-checked: replicated though both are trusted
    cheat, honest = holders
    faults = _streaks(env)[cheat.worker][1]
    _answer(env, cheat, job["job_id"], wrong=True)
    _answer(env, honest, job["job_id"])
    (third,) = [c for c in env.assigned(job["job_id"]) if c not in holders]  # disagreement
    _answer(env, third, job["job_id"])
    decided = env.http.get(f"/v1/jobs/{job['job_id']}").json()
    assert decided["status"] == "accepted" and len(decided["attestations"]) == 3
    assert _streaks(env)[cheat.worker] == (0, faults + 1)  # trust gone, a safety fault

    setting("spot_check_bps", 0)  # never checked: only trust decides now
    for _ in range(6):
        _, first = _run(env)
        assert first != [cheat.worker], "a worker that lost its trust ran a job alone"
        if _streaks(env)[cheat.worker][0] >= TRUST_AFTER:
            break


def test_an_epoch_of_lone_and_replicated_jobs_settles_and_passes_the_audit(
    ready: ApiEnv,
) -> None:
    env = ready
    outcome = close_epoch(env.ctx)
    assert outcome is not None and outcome.number == 1
    raw = env.http.get("/v1/epochs/1/file").content
    doc = epochfile.parse(raw)
    votes = sorted(len(j["votes"]) for j in doc["jobs"])
    assert votes[0] == 1 and votes[-1] >= 2, votes  # both kinds are in the file
    abis = {n: artifact(REPO_ROOT / "artifacts", n)["abi"] for n in CONTRACT_NAMES}
    report = Auditor(
        env.ctx.chain.w3,
        env.deployment,
        abis,
        lambda n: env.http.get(f"/v1/epochs/{n}/file").content,
        model_tolerances(REPO_ROOT / "models"),
    ).audit()
    assert report.ok, report.faults
    assert report.epochs == [1]
