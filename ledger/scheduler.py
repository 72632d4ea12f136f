"""Choose workers for replicas: eligible (registered and staked on chain, seen recently,
under their limit of work in flight), at random, and never two replicas of one job under the
same contributor."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Collection

from sqlmodel import Session, col, func, select

from ledger.context import Context
from ledger.models import Assignment, AssignmentStatus, Worker

_rng = random.SystemRandom()


def eligible_workers(session: Session, ctx: Context) -> list[Worker]:
    seen_after = time.time() - ctx.settings.worker_seen_s
    return list(
        session.exec(
            select(Worker).where(col(Worker.eligible).is_(True), Worker.last_seen >= seen_after)
        ).all()
    )


def in_flight(session: Session) -> dict[str, int]:
    """Unanswered assignments per worker."""
    rows = session.exec(
        select(Assignment.worker, func.count())
        .where(Assignment.status == AssignmentStatus.ASSIGNED)
        .group_by(col(Assignment.worker))
    ).all()
    return {worker: int(count) for worker, count in rows}


def choose(
    session: Session,
    ctx: Context,
    count: int,
    exclude_contributors: Collection[str] = (),
) -> list[Worker]:
    """Up to ``count`` workers of distinct contributors not in ``exclude_contributors``."""
    by_contributor: dict[str, list[Worker]] = defaultdict(list)
    busy = in_flight(session)
    for worker in eligible_workers(session, ctx):
        if worker.contributor in exclude_contributors:
            continue
        if busy.get(worker.address, 0) >= ctx.settings.worker_max_in_flight:
            continue  # a worker holds at most this many unanswered assignments
        by_contributor[worker.contributor].append(worker)
    owners = list(by_contributor)
    _rng.shuffle(owners)
    return [_rng.choice(by_contributor[owner]) for owner in owners[:count]]


def assign(session: Session, ctx: Context, job_id: str, workers: list[Worker]) -> None:
    deadline = int(time.time()) + ctx.settings.assignment_deadline_s
    for worker in workers:
        session.add(
            Assignment(
                job_id=job_id,
                worker=worker.address,
                contributor=worker.contributor,
                deadline=deadline,
            )
        )


def refresh_eligibility(session: Session, ctx: Context, worker: Worker) -> None:
    """Re-read a worker's eligibility from the chain at most once per TTL."""
    if time.time() - worker.checked_at < ctx.settings.worker_eligibility_ttl_s:
        return
    worker.eligible = bool(
        ctx.chain.call(ctx.chain.registry.functions.isEligible(worker.address), "isEligible")
    )
    worker.checked_at = time.time()
    session.add(worker)
