"""The sweeper and fault records, on SQLite and PostgreSQL: an overdue replica expires (a
liveness fault, never slashable) and goes to a worker of a new contributor; a job past its
timeout fails and is refunded in full; a job is never decided on fewer votes than it wants;
a wrong answer in the consensus class is a safety fault."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ledger_support import add_worker, address, h32, insert_job, snapshot
from sqlmodel import select

from ledger import journal, scheduler
from ledger.config import Settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Worker
from ledger.reconcile import reconcile_batch
from ledger.sweep import sweep
from ledger.work import is_complete, submit

CLIENT = address(0xC1)
PRICE = 10**18 + 3
OWNERS = [address(0xA0 + i) for i in range(4)]
WORKERS = [address(0xB0 + i) for i in range(4)]


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Context:
    context = Context(
        Settings(
            database_url=db_url, data_dir=tmp_path, replicas=2, max_replicas=3, job_timeout_s=600
        )
    )
    with session_scope(context.engine) as session:
        for worker, owner in zip(WORKERS[:3], OWNERS[:3], strict=True):
            add_worker(session, worker, owner)
    return context


def _pending_job(ctx: Context, deadline: int, created_at: int | None = None) -> str:
    """A held job with replicas for workers 0 and 1, both still out."""
    with session_scope(ctx.engine) as session:
        job = insert_job(session, client=CLIENT, price=PRICE, votes=[], status=JobStatus.PENDING)
        job.replicas_wanted = 2
        if created_at is not None:
            job.created_at = created_at
        session.add(job)
        for i in (0, 1):
            session.add(
                Assignment(
                    job_id=job.id, worker=WORKERS[i], contributor=OWNERS[i], deadline=deadline
                )
            )
        return job.id


def _assignments(ctx: Context, job_id: str) -> dict[str, str]:
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(Assignment).where(Assignment.job_id == job_id)).all()
        return {a.worker: a.status for a in rows}


def _faults(ctx: Context) -> dict[str, tuple[int, int]]:
    with session_scope(ctx.engine) as session:
        return {
            w.address: (w.safety_faults, w.liveness_faults)
            for w in session.exec(select(Worker)).all()
        }


def test_sweep_overdue_replica_expires_and_goes_to_a_new_contributor(ctx: Context) -> None:
    now = int(time.time())
    job_id = _pending_job(ctx, deadline=now + 100)
    with session_scope(ctx.engine) as session:  # worker 0 is overdue, worker 1 is not
        a = session.exec(
            select(Assignment).where(Assignment.job_id == job_id, Assignment.worker == WORKERS[0])
        ).one()
        a.deadline = now - 1
        session.add(a)
    before = snapshot(ctx.engine)
    with session_scope(ctx.engine) as session:
        report = sweep(session, ctx, now)
    assert (report.expired, report.reassigned, report.timed_out) == (1, 1, 0)
    assert _assignments(ctx, job_id) == {
        WORKERS[0]: AssignmentStatus.EXPIRED,
        WORKERS[1]: AssignmentStatus.ASSIGNED,
        WORKERS[2]: AssignmentStatus.ASSIGNED,
    }
    assert _faults(ctx)[WORKERS[0]] == (0, 1) and _faults(ctx)[WORKERS[1]] == (0, 0)
    assert snapshot(ctx.engine) == before  # no money moves for a liveness fault
    with session_scope(ctx.engine) as session:  # running again changes nothing
        again = sweep(session, ctx, now)
    assert (again.expired, again.reassigned, again.timed_out) == (0, 0, 0)
    assert _faults(ctx)[WORKERS[0]] == (0, 1)


def test_sweep_refills_later_when_no_worker_was_free(ctx: Context) -> None:
    now = int(time.time())
    with session_scope(ctx.engine) as session:  # only workers 0 and 1 are around
        session.get(Worker, WORKERS[2]).last_seen = 0  # type: ignore[union-attr]
    job_id = _pending_job(ctx, deadline=now - 1)
    with session_scope(ctx.engine) as session:
        report = sweep(session, ctx, now)
    assert (report.expired, report.reassigned) == (2, 0)
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.PENDING and not is_complete(session, job)
        add_worker(session, WORKERS[3], OWNERS[3])
        session.get(Worker, WORKERS[2]).last_seen = time.time()  # type: ignore[union-attr]
    with session_scope(ctx.engine) as session:
        report = sweep(session, ctx, now)
    assert report.reassigned == 2
    statuses = _assignments(ctx, job_id)
    assert statuses[WORKERS[2]] == statuses[WORKERS[3]] == AssignmentStatus.ASSIGNED


def test_sweep_a_late_answer_from_an_expired_replica_is_refused(ctx: Context) -> None:
    now = int(time.time())
    job_id = _pending_job(ctx, deadline=now - 1)
    with session_scope(ctx.engine) as session:
        sweep(session, ctx, now)
    with session_scope(ctx.engine) as session:
        worker = session.get(Worker, WORKERS[0])
        assert worker is not None
        results, ready = submit(session, ctx, worker, [{"job_id": job_id, "result_hash": h32("r")}])
    assert results == [
        {"job_id": job_id, "status": "refused", "error": "expired", "detail": results[0]["detail"]}
    ]
    assert ready == []


def test_sweep_job_past_its_timeout_fails_and_is_refunded(ctx: Context) -> None:
    now = int(time.time())
    job_id = _pending_job(ctx, deadline=now + 3600, created_at=now - 601)
    held = snapshot(ctx.engine)
    assert held.balance(journal.ESCROW) == PRICE
    with session_scope(ctx.engine) as session:
        report = sweep(session, ctx, now)
    assert report.timed_out == 1
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.failure) == (JobStatus.FAILED, "timeout")
    after = snapshot(ctx.engine)
    assert after.balance(journal.ESCROW) == 0
    assert (
        after.balance(journal.client_account(CLIENT))
        == held.balance(journal.client_account(CLIENT)) + PRICE
    )
    assert set(_assignments(ctx, job_id).values()) == {AssignmentStatus.EXPIRED}
    with session_scope(ctx.engine) as session:  # never refunded twice
        assert sweep(session, ctx, now).timed_out == 0
    assert snapshot(ctx.engine) == after


def test_reconcile_wrong_answer_in_the_consensus_class_is_a_safety_fault(ctx: Context) -> None:
    votes = [
        (OWNERS[0], WORKERS[0], h32("fp"), h32("right")),
        (OWNERS[1], WORKERS[1], h32("fp"), h32("right")),
        (OWNERS[2], WORKERS[2], h32("fp"), h32("wrong")),
    ]
    with session_scope(ctx.engine) as session:
        insert_job(session, client=CLIENT, price=PRICE, votes=votes)
    with session_scope(ctx.engine) as session:
        assert reconcile_batch(session, ctx, 10).accepted == 1
    assert _faults(ctx) == {WORKERS[0]: (0, 0), WORKERS[1]: (0, 0), WORKERS[2]: (1, 0)}


def test_scheduler_skips_a_worker_at_its_in_flight_limit(ctx: Context) -> None:
    ctx.settings.worker_max_in_flight = 1
    _pending_job(ctx, deadline=int(time.time()) + 100)  # workers 0 and 1 now hold one each
    with session_scope(ctx.engine) as session:
        assert scheduler.in_flight(session) == {WORKERS[0]: 1, WORKERS[1]: 1}
        chosen = {w.address for w in scheduler.choose(session, ctx, 3)}
    assert chosen == {WORKERS[2]}
    ctx.settings.worker_max_in_flight = 2
    with session_scope(ctx.engine) as session:
        assert {w.address for w in scheduler.choose(session, ctx, 3)} == set(WORKERS[:3])


def test_sweep_a_lone_job_that_lost_its_trusted_worker_goes_back_to_full_replication(
    ctx: Context,
) -> None:
    """Adaptive replication gave the job to one trusted worker; that trust was the worker's
    own, so the job's replacements are as many as an untrusted job gets."""
    now = int(time.time())
    with session_scope(ctx.engine) as session:
        job = insert_job(session, client=CLIENT, price=PRICE, votes=[], status=JobStatus.PENDING)
        job.replicas_wanted = 1
        session.add(job)
        session.add(
            Assignment(job_id=job.id, worker=WORKERS[0], contributor=OWNERS[0], deadline=now - 1)
        )
        job_id = job.id
    with session_scope(ctx.engine) as session:
        report = sweep(session, ctx, now)
    assert (report.expired, report.reassigned) == (1, 2)
    statuses = _assignments(ctx, job_id)
    assert statuses[WORKERS[0]] == AssignmentStatus.EXPIRED
    assert statuses[WORKERS[1]] == statuses[WORKERS[2]] == AssignmentStatus.ASSIGNED
    with session_scope(ctx.engine) as session:
        stored = session.get(Job, job_id)
        assert stored is not None and stored.replicas_wanted == ctx.settings.replicas == 2
        assert not is_complete(session, stored)
