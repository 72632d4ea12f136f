"""Choose workers for replicas: eligible (registered and staked on chain, seen recently,
under their limit of work in flight), at random, and never two replicas of one job under the
same contributor."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from sqlalchemy import bindparam
from sqlalchemy import select as core_select
from sqlmodel import Session, col, func, select

from ledger import notify
from ledger.chain import projection
from ledger.chain.index import ChainIndex
from ledger.context import Context
from ledger.models import Assignment, AssignmentStatus, Job, Worker, WorkerTrust

CHECKED_RESOLUTION_S = 1.0  # Worker.checked_at (read by nothing) is rewritten at most this often


class _Draws:
    """Uniform draws from one 128-bit number read from the OS's CSPRNG, refilled when it
    runs low: unpredictable like ``SystemRandom`` (a worker must not foresee where replicas
    go) at one system call per job instead of one per bit batch. A draw is taken only while at
    least ``n * 2**64`` values are left, so its modulo bias is below 2**-64."""

    def __init__(self) -> None:
        self._pool = 0
        self._room = 1

    def below(self, n: int) -> int:
        if self._room < n << 64:
            self._pool, self._room = int.from_bytes(os.urandom(16)), 1 << 128
        draw = self._pool % n
        self._pool //= n
        self._room //= n
        return draw


# built once: every paid request's admission runs them
_ELIGIBLE = select(Worker).where(
    col(Worker.eligible).is_(True), col(Worker.last_seen) >= bindparam("seen_after")
)
_IN_FLIGHT = (
    select(Assignment.worker, func.count())
    .where(Assignment.status == AssignmentStatus.ASSIGNED)
    .group_by(col(Assignment.worker))
)
_STREAKS = core_select(col(WorkerTrust.address), col(WorkerTrust.agreed_streak)).where(
    col(WorkerTrust.address).in_(bindparam("addresses", expanding=True))
)


def eligible_workers(session: Session, ctx: Context) -> list[Worker]:
    seen_after = time.time() - ctx.settings.worker_seen_s
    return list(session.execute(_ELIGIBLE, {"seen_after": seen_after}).scalars().all())


def in_flight(session: Session) -> dict[str, int]:
    """Unanswered assignments per worker."""
    rows = session.execute(_IN_FLIGHT).all()
    return {worker: int(count) for worker, count in rows}


@dataclass
class Pool:
    """The eligible workers and their work in flight, read once and then kept up to date in
    memory while one unit of work assigns many replicas (a batch of new jobs)."""

    max_in_flight: int
    by_contributor: dict[str, list[Worker]]
    busy: dict[str, int]
    trust: dict[str, int] = field(default_factory=dict)  # agreed runs, if adaptive is on

    @classmethod
    def load(cls, session: Session, ctx: Context) -> Pool:
        by_contributor: dict[str, list[Worker]] = defaultdict(list)
        for worker in eligible_workers(session, ctx):
            by_contributor[worker.contributor].append(worker)
        trust: dict[str, int] = {}
        if ctx.settings.trust_after > 0:
            addresses = [w.address for ws in by_contributor.values() for w in ws]
            trust = agreed_streaks(session, addresses)
        return cls(ctx.settings.worker_max_in_flight, by_contributor, in_flight(session), trust)

    def choose(self, count: int, exclude_contributors: Collection[str] = ()) -> list[Worker]:
        """Up to ``count`` workers of distinct contributors not in ``exclude_contributors``,
        each under its limit of work in flight, at random (``take`` counts them busy)."""
        free: dict[str, list[Worker]] = {}
        for owner, workers in self.by_contributor.items():
            if owner in exclude_contributors:
                continue
            open_ = [w for w in workers if self.busy.get(w.address, 0) < self.max_in_flight]
            if open_:
                free[owner] = open_
        owners = list(free)
        draws = _Draws()
        chosen: list[Worker] = []
        for n in range(min(count, len(owners))):  # a partial Fisher-Yates shuffle
            pick = n + draws.below(len(owners) - n)
            owners[n], owners[pick] = owners[pick], owners[n]
            workers = free[owners[n]]
            chosen.append(workers[draws.below(len(workers))])
        return chosen

    def take(self, workers: list[Worker]) -> None:
        for worker in workers:
            self.busy[worker.address] = self.busy.get(worker.address, 0) + 1


def choose(
    session: Session,
    ctx: Context,
    count: int,
    exclude_contributors: Collection[str] = (),
) -> list[Worker]:
    """Up to ``count`` workers of distinct contributors not in ``exclude_contributors``."""
    return Pool.load(session, ctx).choose(count, exclude_contributors)


SPOT_CHECK_SCALE = 10_000  # spot_check_bps: basis points


def agreed_streaks(session: Session, addresses: Collection[str]) -> dict[str, int]:
    """Each worker's run of agreed replicated jobs (``WorkerTrust``); absent: 0."""
    if not addresses:
        return {}
    rows = session.execute(_STREAKS, {"addresses": sorted(addresses)}).all()
    return {str(address): int(streak) for address, streak in rows}


def adaptive(
    ctx: Context, workers: list[Worker], trust: Mapping[str, int], draws: _Draws | None = None
) -> list[Worker]:
    """Adaptive replication (docs/architecture.md, *Adaptive replication*): of ``workers``
    (chosen at random for one job), the first trusted one alone, where one is trusted and the
    job is not drawn for a spot check; all of them otherwise. Trusted: its last
    ``trust_after`` replicated jobs all agreed with another contributor's worker
    (``trust``: ``Pool.trust``, read with the pool). The draw
    is the OS's CSPRNG, and a spot-checked job's assignment looks like a lone one's: a worker
    cannot tell which of its jobs are checked."""
    trust_after = ctx.settings.trust_after
    if trust_after <= 0 or len(workers) < 2:
        return workers
    trusted = next((w for w in workers if trust.get(w.address, 0) >= trust_after), None)
    if trusted is None:
        return workers
    if (draws or _Draws()).below(SPOT_CHECK_SCALE) < ctx.settings.spot_check_bps:
        return workers
    return [trusted]


def assign(session: Session, ctx: Context, job_id: str, workers: list[Worker]) -> None:
    deadline = int(time.time()) + ctx.settings.assignment_deadline_s
    notify.work_for(session, ctx.settings.redis_url, (w.address for w in workers))
    for worker in workers:
        session.add(
            Assignment(
                job_id=job_id,
                worker=worker.address,
                contributor=worker.contributor,
                deadline=deadline,
            )
        )


def refill(session: Session, ctx: Context, job: Job) -> int:
    """Give a pending job short of live replicas (some expired or handed back) workers of
    contributors never on it (one replica per contributor, ever); returns how many. Short
    when not enough are free: the sweep tries again. A job given to one trusted worker alone
    (``adaptive``) that lost it goes back to full replication: the trust was that worker's."""
    rows = session.exec(select(Assignment).where(Assignment.job_id == job.id)).all()
    live = sum(1 for a in rows if a.status != AssignmentStatus.EXPIRED)
    if live < job.replicas_wanted < ctx.settings.replicas:
        job.replicas_wanted = ctx.settings.replicas
        session.add(job)
    if live >= job.replicas_wanted:
        return 0
    exclude = {a.contributor for a in rows}
    workers = choose(session, ctx, job.replicas_wanted - live, exclude_contributors=exclude)
    assign(session, ctx, job.id, workers)
    return len(workers)


@dataclass(frozen=True)
class _Reading:
    """A worker's standing as read from the chain index, and where the index stood then."""

    cursor: tuple[int, str | None]
    known: bool
    eligible: bool
    at: float  # when it was read (the catch-up's clock)


# Per process and index: the last reading of each worker (at most ``READINGS_MAX``). The index
# changes only with its cursor (last block scanned and its hash: a reorg changes the hash),
# so while the cursor stands the reading stands too; every pull asks again.
READINGS_MAX = 4096
_readings: WeakKeyDictionary[ChainIndex, dict[tuple[str, str], _Reading]] = WeakKeyDictionary()


def refresh_eligibility(session: Session, ctx: Context, worker: Worker) -> None:
    """Set a worker's eligibility from the chain index, never from a chain call:
    ``StakeRegistry.isEligible`` rebuilt from the registry's events (``ledger.chain.projection``,
    which also says why unconfirmed events count). The index first catches up within
    ``ctx.catch_up``'s limits (at most once a second per process); a worker the index does
    not know yet (sign-in found it on chain a moment ago) has a catch-up of its own. Where the
    index has not moved since this worker's last reading, that reading is used again; while
    that reading is younger than the catch-up's interval, the index is not asked to catch up
    either (it would not have: an agent asks at every pull and every wake-up), and one read
    of its cursor is all the check costs."""
    readings = _readings.setdefault(ctx.index, {})
    key = (worker.address.lower(), worker.contributor.lower())
    last = readings.get(key)
    catch_up = ctx.catch_up
    now_m = catch_up.clock()
    if (
        last is not None
        and now_m - last.at < catch_up.min_interval_s
        and last.cursor == ctx.index.cursor(session)
    ):
        eligible = last.eligible
    else:
        eligible = _read_eligibility(session, ctx, worker, readings, key, now_m)
    now = time.time()
    # written only when it changes, and the time of the check to within a second: a pull
    # must not rewrite the worker's row for nothing
    if worker.eligible != eligible or not now - worker.checked_at < CHECKED_RESOLUTION_S:
        worker.eligible, worker.checked_at = eligible, now
    session.add(worker)


def _read_eligibility(
    session: Session,
    ctx: Context,
    worker: Worker,
    readings: dict[tuple[str, str], _Reading],
    key: tuple[str, str],
    now_m: float,
) -> bool:
    """The index caught up (within its limits) and this worker's eligibility read from it,
    or the last reading again where the index has not moved since."""
    last = readings.get(key)
    if last is not None and last.cursor == ctx.index.cursor(session):
        known = last.known
    else:
        known = projection.owner_of(session, worker.address, worker.contributor) is not None
    ctx.catch_up(session, "eligibility" if known else f"worker:{worker.address.lower()}")
    cursor = ctx.index.cursor(session)
    if last is not None and last.cursor == cursor:
        readings[key] = _Reading(cursor, last.known, last.eligible, now_m)
        return last.eligible
    status = projection.worker_status(session, worker.address, worker.contributor)
    eligible = status.eligible(ctx.min_stake_wei)
    if len(readings) >= READINGS_MAX:
        readings.clear()
    readings[key] = _Reading(cursor, status.owner is not None, eligible, now_m)
    return eligible
