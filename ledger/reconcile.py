"""Decide jobs whose replicas have all answered, in batches.

A vote is a replica's (fingerprint, result hash). Votes in one execution-fingerprint class
must match bit for bit; votes of different classes agree when their revealed outputs are
within the model's declared ``tolerance_abs`` element by element (honest CPUs of different
ISA tiers or optimisation levels differ in the last bits; a wrong model or input differs by
far more). Never argmax or rounding: every output element is compared.

All votes agree: accepted. Otherwise another replica is added (a worker of a contributor not
yet on the job) until ``max_replicas``; then the answer backed by a strict majority is
accepted and anything less fails, charging the client nothing. Accepting pays the
contributors whose workers agreed and the treasury its fee, from the escrowed price. A vote
that disagrees with the accepted answer is a safety fault of its worker (slashable on chain
only within the consensus class: ``ledger.slashing``). Running it again on a decided job
changes nothing.

A batch is one unit of work in a constant number of statements, whatever its size: the jobs
and their votes are read at once, every payment and refund is posted by one
``journal.post_batch``, and the jobs are updated by one executemany. Only a job that needs
another replica takes the slow path through the scheduler.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, col

from ledger import invariants, journal, notify, scheduler
from ledger.context import Context
from ledger.db import ROWS_PER_STATEMENT, mark, values_list
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Worker, WorkerTrust
from protocol.consensus import Tally, Vote, tally, within_tolerance
from protocol.pricing import split

# the pure rule lives in protocol.consensus (the auditor decides by it too); re-exported
__all__ = ["ReconcileReport", "Tally", "Vote", "reconcile_batch", "tally", "within_tolerance"]

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    accepted: int = 0
    failed: int = 0
    extended: int = 0
    job_ids: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    """What one batch decides, applied at the end in a few statements."""

    specs: list[TransferSpec] = field(default_factory=list)
    decided: list[tuple[str, str, str | None, str | None, int | None, str | None]] = field(
        default_factory=list
    )  # (job id, status, fingerprint, result hash, assignment with the outputs, failure)
    faults: Counter[str] = field(default_factory=Counter)
    agreed: Counter[str] = field(default_factory=Counter)  # workers backed by another's vote


def _accept(ctx: Context, job: Any, result: Tally, votes: list[Vote], batch: _Batch) -> None:
    agreeing = {v.assignment for v in result.agreeing}
    batch.faults.update(v.worker for v in votes if v.assignment not in agreeing)
    if len(result.agreeing) > 1:  # a lone vote proves nothing: trust is earned in company
        batch.agreed.update(v.worker for v in result.agreeing)
    shares, fee = split(
        job.price_wei, ctx.settings.fee_bps, sorted(v.contributor for v in result.agreeing)
    )
    batch.specs.extend(
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
    )
    if fee > 0:
        batch.specs.append(
            TransferSpec(
                f"fee:{job.id}", journal.ESCROW, journal.TREASURY, fee, TransferKind.FEE, job.id
            )
        )
    # the outputs kept are those of the first vote of the winning answer itself
    source = min(v.assignment for v in votes if v.answer == result.winner)
    batch.decided.append(
        (job.id, str(JobStatus.ACCEPTED), result.winner[0], result.winner[1], source, None)
    )


def _fail(job: Any, reason: str, batch: _Batch) -> None:
    batch.specs.append(
        TransferSpec(
            f"refund:{job.id}",
            journal.ESCROW,
            journal.client_account(job.client),
            job.price_wei,
            TransferKind.REFUND,
            job.id,
        )
    )
    batch.decided.append((job.id, str(JobStatus.FAILED), None, None, None, reason))


def _extend(session: Session, ctx: Context, job_id: str, votes: list[Vote]) -> bool:
    """Ask one more worker, of a contributor not yet on the job; False if none is free."""
    extra = scheduler.choose(session, ctx, 1, exclude_contributors={v.contributor for v in votes})
    if not extra:
        return False
    scheduler.assign(session, ctx, job_id, extra)
    session.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .values(status=JobStatus.PENDING, replicas_wanted=len(votes) + 1)
    )
    return True


# built once: a decision in the request runs each of them
_VOTES = (
    select(
        col(Assignment.id),
        col(Assignment.job_id),
        col(Assignment.worker),
        col(Assignment.contributor),
        col(Assignment.fingerprint),
        col(Assignment.result_hash),
    )
    .where(col(Assignment.job_id).in_(bindparam("job_ids", expanding=True)))
    .where(col(Assignment.status) == AssignmentStatus.SUBMITTED)
    .order_by(col(Assignment.id))
)
_SUBMITTED = (
    select(col(Job.id), col(Job.client), col(Job.model_hash), col(Job.price_wei))
    .where(col(Job.status) == JobStatus.SUBMITTED)
    .order_by(col(Job.created_at))
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_SUBMITTED_OF = _SUBMITTED.where(col(Job.id).in_(bindparam("job_ids", expanding=True)))


def _votes(session: Session, job_ids: list[str]) -> dict[str, list[Vote]]:
    rows = session.connection().execute(_VOTES, {"job_ids": job_ids}).all()
    votes: dict[str, list[Vote]] = defaultdict(list)
    for aid, jid, worker, contributor, fingerprint, result_hash in rows:
        answer = (fingerprint or "", result_hash or "")
        votes[jid].append(Vote(cast(int, aid), worker, contributor, answer))  # stored: an id
    return votes


def _outputs(session: Session, assignment_ids: list[int]) -> dict[int, str | None]:
    rows = session.execute(
        select(col(Assignment.id), col(Assignment.outputs_json)).where(
            col(Assignment.id).in_(assignment_ids)
        )
    ).all()
    return {int(aid): outputs for aid, outputs in rows}


_DECIDE = """UPDATE job SET status = v.column2, fingerprint = v.column3, result_hash = v.column4,
outputs_json = (SELECT a.outputs_json FROM assignment a WHERE a.id = CAST(v.column5 AS INTEGER)),
failure = v.column6, decided_at = {now}
FROM (VALUES {values}) AS v WHERE job.id = v.column1 AND job.status = '{submitted}'"""


def _apply(
    session: Session, batch: _Batch, redis_url: str, locked: dict[str, journal.Locked]
) -> None:
    """Post the batch's money, then decide its jobs a few hundred per statement (an UPDATE
    from a VALUES list, the same SQL on SQLite and PostgreSQL); a job already decided is
    left as it is, whatever runs again."""
    journal.post_batch(session, batch.specs, locked)
    notify.decided(session, redis_url, (d[0] for d in batch.decided))
    connection = session.connection()
    for start in range(0, len(batch.decided), ROWS_PER_STATEMENT):
        values, flat = values_list(
            connection.dialect, batch.decided[start : start + ROWS_PER_STATEMENT]
        )
        sql = _DECIDE.format(now=int(time.time()), values=values, submitted=JobStatus.SUBMITTED)
        connection.exec_driver_sql(sql, tuple(flat))
    _track_record(connection, batch)


_TRUST_UPSERT = """INSERT INTO workertrust (address, agreed_streak) VALUES ({m}, {m})
ON CONFLICT (address) DO UPDATE SET agreed_streak = {set_to}"""


def _track_record(connection: Any, batch: _Batch) -> None:
    """Each worker's safety faults, and its run of agreed replicated jobs (``WorkerTrust``,
    adaptive replication: ``scheduler.adaptive``): agreeing extends the run, a fault anywhere
    in the batch ends it. Runs are upserted in address order."""
    if batch.faults:
        bump = (
            update(Worker)
            .where(col(Worker.address) == bindparam("b_worker"))
            .values(safety_faults=col(Worker.safety_faults) + bindparam("b_count"))
        )
        connection.execute(
            bump, [{"b_worker": w, "b_count": n} for w, n in sorted(batch.faults.items())]
        )
    m = mark(connection.dialect)
    agreed = sorted((w, n) for w, n in batch.agreed.items() if w not in batch.faults)
    if agreed:
        extend = "workertrust.agreed_streak + excluded.agreed_streak"
        connection.exec_driver_sql(_TRUST_UPSERT.format(m=m, set_to=extend), agreed)
    if batch.faults:
        ended = [(w, 0) for w in sorted(batch.faults)]
        connection.exec_driver_sql(_TRUST_UPSERT.format(m=m, set_to="0"), ended)


RECONCILE_CACHE_KIB = 64 * 1024  # SQLite: the reconciling connection's page cache


def _larger_page_cache(session: Session) -> None:
    """On SQLite, a page cache of ``RECONCILE_CACHE_KIB`` for this connection, kept after the
    unit of work (it is the reconciler's: Celery's worker process, its pool). Each batch
    inserts three transfers a job into indexes keyed by random ids and updates jobs all over
    the table; with SQLite's 2 MiB default most of those pages were read again from the
    file, and batches slowed as the tables grew: 4,449 jobs/s at 100,000 jobs without it,
    5,160 with it (docs/performance.md, *Reconcile*)."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql(f"PRAGMA cache_size = -{RECONCILE_CACHE_KIB}")


def _expire_changed(session: Session) -> None:
    """Expire what the batch's statements changed under the session's loaded objects: jobs
    (decided) and track records, whole; workers, their safety faults only (the submitting
    worker of a decision in the request stays loaded: a reload of its row was a statement
    of every such request). Accounts' balances were set on loaded copies as written."""
    for loaded in list(session.identity_map.values()):
        if isinstance(loaded, Worker):
            session.expire(loaded, ["safety_faults"])
        elif isinstance(loaded, (Job, WorkerTrust)):
            session.expire(loaded)


def reconcile_batch(
    session: Session, ctx: Context, limit: int, job_ids: Collection[str] | None = None
) -> ReconcileReport:
    """Decide up to ``limit`` submitted jobs, oldest first, as one unit of work; only those
    of ``job_ids`` where given (``decide_now``)."""
    session.flush()  # what is read next is read past the ORM, on the connection
    connection = session.connection()
    if job_ids is None:
        _larger_page_cache(session)
        jobs = connection.execute(_SUBMITTED, {"limit": limit}).all()
    else:
        params = {"limit": limit, "job_ids": sorted(job_ids)}
        jobs = connection.execute(_SUBMITTED_OF, params).all()
    report = ReconcileReport()
    if not jobs:
        return report
    votes = _votes(session, [j.id for j in jobs])
    contested = [
        v.assignment for j in jobs if len({x.answer for x in votes[j.id]}) > 1 for v in votes[j.id]
    ]
    outputs = _outputs(session, contested) if contested else {}
    batch = _Batch()
    max_bytes = ctx.settings.max_tensor_bytes
    for job in jobs:
        job_votes = votes[job.id]
        if not job_votes:  # cannot happen (submitted means answered); never decide on nothing
            logger.error("job %s is submitted without votes; left for the sweeper", job.id)
            continue
        manifest = ctx.models.get(job.model_hash.removeprefix("0x"))
        tolerance = manifest.tolerance_abs if manifest is not None else 0.0
        result = tally(job_votes, outputs, tolerance, max_bytes)
        if result.unanimous:
            _accept(ctx, job, result, job_votes, batch)
            report.accepted += 1
        elif len(job_votes) < ctx.settings.max_replicas and _extend(
            session, ctx, job.id, job_votes
        ):
            report.extended += 1
            continue
        elif result.majority:
            _accept(ctx, job, result, job_votes, batch)
            report.accepted += 1
        else:
            _fail(job, "no_majority", batch)
            report.failed += 1
        report.job_ids.append(job.id)
    # what the batch moves: its accounts' balances before (locked now), and escrow giving up
    # the price of every job it decides (accepted: pays and fee; failed: the refund)
    touched = journal.lock_accounts(session, (i for s in batch.specs for i in (s.debit, s.credit)))
    before = {i: a.balance_wei for i, a in touched.items()}
    prices = {j.id: j.price_wei for j in jobs}
    released = sum(prices[d[0]] for d in batch.decided)
    _apply(session, batch, ctx.settings.redis_url, touched)
    session.flush()
    _expire_changed(session)
    # the checks on what this unit changed: check_money reads every open job, which made
    # each batch cost more the more jobs wait (the sweep still runs it in full)
    invariants.unit_conserves(session, before, escrow_change_wei=-released)
    logger.info(
        "reconciled %d jobs: %d accepted, %d failed, %d extended",
        len(jobs),
        report.accepted,
        report.failed,
        report.extended,
    )
    return report


def decide_now(session: Session, ctx: Context, job_ids: Collection[str]) -> bool:
    """Decide ``job_ids`` (made ready by the submission in ``session``) in the same unit of
    work, inside a savepoint: the request that stores a job's last vote answers its client
    at once, without the trip through Celery (docs/architecture.md, *Deciding in the
    request*). True if they were decided; False where there were more than
    ``reconcile_inline_max`` or the decision failed (the savepoint is rolled back, the votes
    stay, and the caller leaves the jobs to the Celery reconciler)."""
    if not job_ids or len(job_ids) > ctx.settings.reconcile_inline_max:
        return False
    try:
        with session.begin_nested():
            reconcile_batch(session, ctx, len(job_ids), job_ids)
    except Exception:  # the reconciler decides them: never lose the submission for this
        logger.exception(
            "deciding %d jobs in the request failed; left to the reconciler", len(job_ids)
        )
        return False
    return True
