"""Submissions in batches, as the agents send them: each item is answered in its place, the
items of a batch see what the items before them recorded (the same job twice), a batch can
complete several jobs at once; and a worker's ``last_seen`` is rewritten at most once a
second (``ledger.work.SEEN_RESOLUTION_S``), never left behind by more."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from api_harness import ApiEnv, Contributor, samples
from sqlmodel import select

from ledger.db import session_scope
from ledger.models import Assignment, AssignmentStatus, Worker
from ledger.work import SEEN_RESOLUTION_S


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _pull(env: ApiEnv, c: Contributor) -> list[dict[str, Any]]:
    """All the worker holds (the jobs of ``_shared`` other pairs got are never answered)."""
    r = env.http.get("/v1/work", params={"max": 64}, headers=c.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["assignments"])


def _mine(env: ApiEnv, c: Contributor, job_id: str) -> dict[str, Any]:
    (found,) = [a for a in _pull(env, c) if a["job_id"] == job_id]
    return found


def _rows(env: ApiEnv, c: Contributor, job_id: str) -> list[tuple[str, str | None, str | None]]:
    with session_scope(env.ctx.engine) as session:
        rows = session.exec(
            select(Assignment).where(Assignment.job_id == job_id, Assignment.worker == c.worker)
        ).all()
        return [(a.status, a.result_hash, a.signature) for a in rows]


def _shared(env: ApiEnv, count: int, start: int) -> tuple[list[str], Contributor, Contributor]:
    """``count`` jobs all assigned to the same two contributors (submitted until they are)."""
    jobs: dict[tuple[str, str], list[str]] = {}
    for n in range(count * 6):
        job = env.submit_job(samples(1, start=start + n))
        pair = sorted(c.worker for c in env.assigned(job["job_id"]))
        jobs.setdefault((pair[0], pair[1]), []).append(job["job_id"])
        for (w1, w2), ids in jobs.items():
            if len(ids) == count:
                (first,) = [c for c in env.contributors if c.worker == w1]
                (second,) = [c for c in env.contributors if c.worker == w2]
                return ids, first, second
    raise AssertionError("the scheduler never gave two contributors enough jobs")


def test_a_batch_answers_each_item_in_its_place(ready: ApiEnv) -> None:
    env = ready
    (jid_a, jid_b), first, second = _shared(env, 2, start=200)
    good_a = env.result_item(_mine(env, first, jid_a), first.device)
    good_b = env.result_item(_mine(env, first, jid_b), first.device)
    ghost = dict(good_a, job_id="0x" + "cd" * 32)
    unsigned = dict(good_b, signature="0x" + "00" * 65)
    batch: list[Any] = [unsigned, good_a, ghost, {}, good_b, {"job_id": "0x12"}]
    results = env.post_results(first, batch)
    assert [(r["job_id"], r["status"], r["error"]) for r in results] == [
        (jid_b, "refused", "invalid_signature"),
        (jid_a, "accepted", None),
        (ghost["job_id"], "refused", "not_assigned"),
        ("", "refused", "invalid_field"),
        (jid_b, "accepted", None),  # the refusal of its first item changed nothing
        ("0x12", "refused", "invalid_field"),
    ]
    for jid, good in ((jid_a, good_a), (jid_b, good_b)):
        assert _rows(env, first, jid) == [
            (AssignmentStatus.SUBMITTED, good["result_hash"], good["signature"])
        ]
        assert env.http.get(f"/v1/jobs/{jid}").json()["status"] == "pending"  # one replica


def test_the_same_job_twice_in_one_batch(ready: ApiEnv) -> None:
    env = ready
    (jid_a, jid_b), first, second = _shared(env, 2, start=300)
    good_a = env.result_item(_mine(env, first, jid_a), first.device)
    other = {"logits": env.model.run(samples(1, start=1))["logits"] + np.float32(1.0)}
    changed_a = env.result_item(_mine(env, first, jid_a), first.device, outputs=other)
    # the very same answer twice: the second is a duplicate
    results = env.post_results(first, [good_a, good_a])
    assert [(r["job_id"], r["status"], r["detail"]) for r in results] == [
        (jid_a, "accepted", ""),
        (jid_a, "accepted", "duplicate"),
    ]
    assert _rows(env, first, jid_a) == [
        (AssignmentStatus.SUBMITTED, good_a["result_hash"], good_a["signature"])
    ]
    # another answer after a good one in the same batch: refused, the first one stays
    good_b = env.result_item(_mine(env, first, jid_b), first.device)
    changed_b = env.result_item(_mine(env, first, jid_b), first.device, outputs=other)
    results = env.post_results(first, [good_b, changed_b, changed_a])
    assert [(r["status"], r["error"]) for r in results] == [
        ("accepted", None),
        ("refused", "already_submitted"),
        ("refused", "already_submitted"),
    ]
    assert _rows(env, first, jid_b) == [
        (AssignmentStatus.SUBMITTED, good_b["result_hash"], good_b["signature"])
    ]
    # a refused answer first does not stop the good one after it
    for jid in (jid_a, jid_b):
        mine = _mine(env, second, jid)
        bad = env.result_item(mine, first.device)  # signed by another key
        results = env.post_results(second, [bad, env.result_item(mine, second.device)])
        assert [(r["status"], r["error"]) for r in results] == [
            ("refused", "bad_signature"),
            ("accepted", None),
        ]
        assert env.http.get(f"/v1/jobs/{jid}").json()["status"] == "submitted"


def test_one_batch_completes_several_jobs(ready: ApiEnv) -> None:
    env = ready
    ids, first, second = _shared(env, 3, start=400)
    for c in (first, second):
        pulled = {a["job_id"]: a for a in _pull(env, c)}
        results = env.post_results(c, [env.result_item(pulled[j], c.device) for j in ids])
        assert [(r["job_id"], r["status"]) for r in results] == [(j, "accepted") for j in ids]
        want = "pending" if c is first else "submitted"
        assert [env.http.get(f"/v1/jobs/{j}").json()["status"] for j in ids] == [want] * 3
    report = env.reconcile()
    assert set(ids) <= set(report.job_ids)


def _last_seen(env: ApiEnv, c: Contributor) -> float:
    with session_scope(env.ctx.engine) as session:
        worker = session.get(Worker, c.worker)
        assert worker is not None
        return worker.last_seen


def _set_last_seen(env: ApiEnv, c: Contributor, value: float) -> None:
    with session_scope(env.ctx.engine) as session:
        worker = session.get(Worker, c.worker)
        assert worker is not None
        worker.last_seen = value
        session.add(worker)


def test_last_seen_is_rewritten_at_most_once_a_second(ready: ApiEnv) -> None:
    env = ready
    c = env.contributors[0]
    recent = time.time() - SEEN_RESOLUTION_S / 2
    _set_last_seen(env, c, recent)
    env.pull(c)
    assert env.post_results(c, []) == []
    assert env.http.post("/v1/work/heartbeat", headers=c.headers).status_code == 200
    assert _last_seen(env, c) == recent  # seen within the resolution: not written again
    for call in (
        lambda: env.pull(c),
        lambda: env.post_results(c, []),
        lambda: env.http.post("/v1/work/heartbeat", headers=c.headers),
        lambda: env.http.post("/v1/work/release", json={"job_ids": []}, headers=c.headers),
    ):
        stale = time.time() - SEEN_RESOLUTION_S - 0.5
        _set_last_seen(env, c, stale)
        before = time.time()
        call()
        assert before <= _last_seen(env, c) <= time.time()
