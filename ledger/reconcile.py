"""Decide jobs whose replicas have all answered, in batches.

Votes are compared exactly within one execution-fingerprint class: a vote is the pair
(fingerprint, result hash). All votes agree: accepted. Otherwise another replica is added
(a worker of a contributor not yet on the job) until ``max_replicas``; then a strict majority
is accepted and anything less fails, charging the client nothing. Accepting pays the
contributors whose workers agreed and the treasury its fee, from the escrowed price.
Running it again on a decided job changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from ledger import invariants, journal, scheduler
from ledger.context import Context
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Worker
from protocol.pricing import split

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    accepted: int = 0
    failed: int = 0
    extended: int = 0
    job_ids: list[str] = field(default_factory=list)


def _accept(
    session: Session, ctx: Context, job: Job, votes: list[Assignment], winner: tuple[str, str]
) -> None:
    agreeing = [v for v in votes if (v.fingerprint, v.result_hash) == winner]
    for vote in votes:  # a different answer in the consensus's class is a safety fault
        if vote.fingerprint == winner[0] and vote.result_hash != winner[1]:
            worker = session.get(Worker, vote.worker)
            if worker is not None:
                worker.safety_faults += 1
                session.add(worker)
    shares, fee = split(
        job.price_wei, ctx.settings.fee_bps, sorted(v.contributor for v in agreeing)
    )
    specs = [
        TransferSpec(
            f"pay:{job.id}:{c.lower()}",
            journal.ESCROW,
            journal.contributor_account(c),
            amount,
            TransferKind.PAY,
            job.id,
        )
        for c, amount in shares.items()
        if amount > 0
    ]
    if fee > 0:
        specs.append(
            TransferSpec(
                f"fee:{job.id}", journal.ESCROW, journal.TREASURY, fee, TransferKind.FEE, job.id
            )
        )
    journal.post_all(session, specs)
    job.status = JobStatus.ACCEPTED
    job.fingerprint, job.result_hash = winner
    job.outputs_json = agreeing[0].outputs_json


def _fail(session: Session, job: Job, reason: str) -> None:
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
    job.status = JobStatus.FAILED
    job.failure = reason


def decide(session: Session, ctx: Context, job: Job, report: ReconcileReport) -> None:
    votes = list(
        session.exec(
            select(Assignment).where(
                Assignment.job_id == job.id, Assignment.status == AssignmentStatus.SUBMITTED
            )
        ).all()
    )
    tally = Counter((v.fingerprint or "", v.result_hash or "") for v in votes)
    ((winner, count),) = tally.most_common(1)
    if count == len(votes):
        _accept(session, ctx, job, votes, winner)
        report.accepted += 1
    elif len(votes) < ctx.settings.max_replicas and (
        extra := scheduler.choose(
            session, ctx, 1, exclude_contributors={v.contributor for v in votes}
        )
    ):
        scheduler.assign(session, ctx, job.id, extra)
        job.status = JobStatus.PENDING
        job.replicas_wanted = len(votes) + 1
        report.extended += 1
        session.add(job)
        return
    elif count * 2 > len(votes):
        _accept(session, ctx, job, votes, winner)
        report.accepted += 1
    else:
        _fail(session, job, "no_majority")
        report.failed += 1
    job.decided_at = int(time.time())
    report.job_ids.append(job.id)
    session.add(job)


def reconcile_batch(session: Session, ctx: Context, limit: int) -> ReconcileReport:
    report = ReconcileReport()
    jobs = session.exec(
        select(Job)
        .where(Job.status == JobStatus.SUBMITTED)
        .order_by(col(Job.created_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for job in jobs:
        decide(session, ctx, job, report)
    session.flush()
    invariants.check_money(session)
    if jobs:
        logger.info("reconciled %d jobs: %s", len(jobs), report)
    return report
