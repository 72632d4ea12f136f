"""Hand-backs, heartbeats and pending earnings, on SQLite and PostgreSQL: a released
assignment expires without a fault and goes at once to a worker of a new contributor; what
the worker does not hold is left alone; pay counts as pending until its job is under a
posted epoch root, and only the pay of the worker's own votes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ledger_support import add_worker, address, h32, insert_job, snapshot
from sqlmodel import select

from ledger import journal
from ledger.config import Settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.earnings import pending_of
from ledger.models import Assignment, AssignmentStatus, Epoch, EpochStatus, Job, JobStatus, Worker
from ledger.reconcile import reconcile_batch
from ledger.work import heartbeat, release, submit
from protocol.pricing import split

CLIENT = address(0xC1)
PRICE = 10**30 + 7
OWNERS = [address(0xA0 + i) for i in range(4)]
WORKERS = [address(0xB0 + i) for i in range(4)]
FP, RESULT = h32("fingerprint"), h32("result")


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Context:
    context = Context(
        Settings(database_url=db_url, data_dir=tmp_path, replicas=2, max_replicas=3, fee_bps=1000)
    )
    with session_scope(context.engine) as session:
        for worker, owner in zip(WORKERS[:3], OWNERS[:3], strict=True):
            add_worker(session, worker, owner)
    return context


def _pending_job(ctx: Context) -> str:
    """A held job with replicas for workers 0 and 1, both still out."""
    with session_scope(ctx.engine) as session:
        job = insert_job(session, client=CLIENT, price=PRICE, votes=[], status=JobStatus.PENDING)
        job.replicas_wanted = 2
        session.add(job)
        for i in (0, 1):
            session.add(
                Assignment(
                    job_id=job.id,
                    worker=WORKERS[i],
                    contributor=OWNERS[i],
                    deadline=int(time.time()) + 120,
                )
            )
        return job.id


def _statuses(ctx: Context, job_id: str) -> dict[str, str]:
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(Assignment).where(Assignment.job_id == job_id)).all()
        return {a.worker: a.status for a in rows}


def _release(ctx: Context, index: int, job_ids: list[str]) -> list[str]:
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[index])
        assert worker is not None
        return release(session, ctx, worker, job_ids, "test")


def _faults(ctx: Context, index: int) -> tuple[int, int]:
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[index])
        assert worker is not None
        return worker.safety_faults, worker.liveness_faults


def test_release_expires_without_a_fault_and_reassigns_at_once(ctx: Context) -> None:
    job_id = _pending_job(ctx)
    before = snapshot(ctx.engine)
    assert _release(ctx, 0, [job_id.upper().replace("0X", "0x")]) == [job_id]
    assert _statuses(ctx, job_id) == {
        WORKERS[0]: AssignmentStatus.EXPIRED,
        WORKERS[1]: AssignmentStatus.ASSIGNED,
        WORKERS[2]: AssignmentStatus.ASSIGNED,  # the only contributor not yet on the job
    }
    assert _faults(ctx, 0) == (0, 0)
    assert snapshot(ctx.engine) == before  # no money moves
    assert _release(ctx, 0, [job_id]) == []  # twice: nothing more
    with session_scope(ctx.engine) as session:  # a late answer is refused
        worker = session.get(Worker, WORKERS[0])
        assert worker is not None
        results, _ = submit(session, ctx, worker, [{"job_id": job_id, "result_hash": RESULT}])
    assert results[0]["error"] == "expired"


def test_release_leaves_what_the_worker_does_not_hold(ctx: Context) -> None:
    job_id = _pending_job(ctx)
    unknown = h32("no such job")
    assert _release(ctx, 2, [job_id]) == []  # assigned to others
    assert _release(ctx, 0, [unknown]) == []
    assert _release(ctx, 0, []) == []
    with session_scope(ctx.engine) as session:  # answered: not handed back
        a = session.exec(
            select(Assignment).where(Assignment.job_id == job_id, Assignment.worker == WORKERS[1])
        ).one()
        a.status = AssignmentStatus.SUBMITTED
        session.add(a)
    assert _release(ctx, 1, [job_id]) == []
    assert _statuses(ctx, job_id) == {
        WORKERS[0]: AssignmentStatus.ASSIGNED,
        WORKERS[1]: AssignmentStatus.SUBMITTED,
    }


def test_release_without_a_free_contributor_leaves_the_refill_to_the_sweep(ctx: Context) -> None:
    with session_scope(ctx.engine) as session:
        w2 = session.get(Worker, WORKERS[2])
        assert w2 is not None
        w2.last_seen = 0  # not seen: not a candidate
        session.add(w2)
    job_id = _pending_job(ctx)
    assert _release(ctx, 0, [job_id]) == [job_id]
    assert _statuses(ctx, job_id) == {
        WORKERS[0]: AssignmentStatus.EXPIRED,
        WORKERS[1]: AssignmentStatus.ASSIGNED,
    }
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.PENDING


def test_heartbeat_marks_the_worker_seen_and_counts_its_open_work(ctx: Context) -> None:
    _pending_job(ctx)
    _pending_job(ctx)
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[0])
        assert worker is not None
        worker.last_seen = 0
        session.add(worker)
    started = time.time()
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[0])
        assert worker is not None
        assert heartbeat(session, worker) == 2
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[0])
        idle = session.get(Worker, WORKERS[2])
        assert worker is not None and worker.last_seen >= started
        assert idle is not None and heartbeat(session, idle) == 0


def _job_epoch(ctx: Context, job_id: str) -> int | None:
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.epoch


def _pending(ctx: Context, index: int) -> tuple[int, int, int]:
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[index])
        assert worker is not None
        p = pending_of(session, worker)
        return p.pending_wei, p.pending_jobs, p.posted_epoch


def test_pending_earnings_count_own_votes_until_the_epoch_is_posted(ctx: Context) -> None:
    agree = [(OWNERS[0], WORKERS[0], FP, RESULT), (OWNERS[1], WORKERS[1], FP, RESULT)]
    outvoted = [
        (OWNERS[0], WORKERS[0], FP, h32("wrong")),
        (OWNERS[1], WORKERS[1], FP, RESULT),
        (OWNERS[2], WORKERS[2], FP, RESULT),
    ]
    with session_scope(ctx.engine) as session:
        first = insert_job(session, client=CLIENT, price=PRICE, votes=agree).id
        second = insert_job(session, client=CLIENT, price=PRICE, votes=outvoted).id
    assert _pending(ctx, 0) == (0, 0, 0)  # nothing decided yet
    with session_scope(ctx.engine) as session:
        report = reconcile_batch(session, ctx, 100)
    assert report.accepted == 2
    two, _ = split(PRICE, 1000, OWNERS[:2])
    three, _ = split(PRICE, 1000, OWNERS[1:3])
    assert _pending(ctx, 0) == (two[OWNERS[0]], 1, 0)  # not paid for the outvoted vote
    assert _pending(ctx, 1) == (two[OWNERS[1]] + three[OWNERS[1]], 2, 0)
    with session_scope(ctx.engine) as session:  # epoch 1 takes the first job, then is posted
        session.add(Epoch(number=1, jobs=1))
        job = session.get(Job, first)
        assert job is not None
        job.epoch = 1
        session.add(job)
    assert _pending(ctx, 1) == (two[OWNERS[1]] + three[OWNERS[1]], 2, 0)  # building: pending
    with session_scope(ctx.engine) as session:
        epoch = session.get(Epoch, 1)
        assert epoch is not None
        epoch.status = EpochStatus.POSTED
        session.add(epoch)
    assert _pending(ctx, 0) == (0, 0, 1)
    assert _pending(ctx, 1) == (three[OWNERS[1]], 1, 1)
    earned = snapshot(ctx.engine).balance(journal.contributor_account(OWNERS[1]))
    assert earned == two[OWNERS[1]] + three[OWNERS[1]]  # the journal agrees on the total
    assert _job_epoch(ctx, second) is None
