"""The sweeper: work stuck past its deadline, found in the database (never trusted to a
queue message).

- An assignment unanswered past its deadline expires: a liveness fault of its worker
  (never slashable), and the replica goes to a worker of a contributor not yet on the job.
- A job still undecided ``job_timeout_s`` after it was made fails and is refunded in full:
  the client pays nothing for a job without consensus.
Running it again changes nothing that is not newly due.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlmodel import Session, col, select

from ledger import invariants, journal, notify, scheduler
from ledger.context import Context
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Worker

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    expired: int = 0
    reassigned: int = 0
    timed_out: int = 0


def _expire(session: Session, ctx: Context, now: int, report: SweepReport) -> None:
    due = session.exec(
        select(Assignment, Job)
        .join(Job, col(Job.id) == col(Assignment.job_id))
        .where(Assignment.status == AssignmentStatus.ASSIGNED, col(Assignment.deadline) < now)
        .where(Job.status == JobStatus.PENDING)
        .limit(ctx.settings.sweep_batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    for assignment, job in due:
        assignment.status = AssignmentStatus.EXPIRED
        session.add(assignment)
        worker = session.get(Worker, assignment.worker)
        if worker is not None:
            worker.liveness_faults += 1
            session.add(worker)
        report.expired += 1
        logger.info("assignment of job %s to %s expired", job.id, assignment.worker)


def _refill(session: Session, ctx: Context, report: SweepReport) -> None:
    """Give each pending job short of replicas (after expiries) workers of new contributors."""
    pending = session.exec(  # only a job with an expired replica can be short of replicas
        select(Job)
        .join(Assignment, col(Assignment.job_id) == col(Job.id))
        .where(Job.status == JobStatus.PENDING, Assignment.status == AssignmentStatus.EXPIRED)
        .distinct()
        .limit(ctx.settings.sweep_batch_size)
    ).all()
    for job in pending:
        report.reassigned += scheduler.refill(session, ctx, job)


def _time_out(session: Session, ctx: Context, now: int, report: SweepReport) -> None:
    stale = session.exec(
        select(Job)
        .where(col(Job.status).in_([JobStatus.PENDING, JobStatus.SUBMITTED]))
        .where(col(Job.created_at) < now - ctx.settings.job_timeout_s)
        .limit(ctx.settings.sweep_batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    for job in stale:
        journal.post(
            session,
            TransferSpec(
                f"refund:{job.id}",
                journal.ESCROW,
                journal.client_account(job.client),
                job.price_wei,
                TransferKind.REFUND,
                job.id,
            ),
        )
        job.status, job.failure, job.decided_at = JobStatus.FAILED, "timeout", now
        session.add(job)
        notify.decided(session, ctx.settings.redis_url, [job.id])
        for a in session.exec(
            select(Assignment).where(
                Assignment.job_id == job.id, Assignment.status == AssignmentStatus.ASSIGNED
            )
        ).all():
            a.status = AssignmentStatus.EXPIRED
            session.add(a)
        report.timed_out += 1


def sweep(session: Session, ctx: Context, now: int | None = None) -> SweepReport:
    """One unit of work: expire and replace overdue assignments, fail timed-out jobs."""
    now = int(time.time()) if now is None else now
    report = SweepReport()
    _time_out(session, ctx, now, report)
    _expire(session, ctx, now, report)
    session.flush()
    _refill(session, ctx, report)
    session.flush()
    invariants.check_money(session)
    return report
