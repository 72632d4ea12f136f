"""The Celery chaos scenario: a real worker, beat and Redis, disrupted while they reconcile.

Each round writes a wave of answered jobs into a fresh database and queues a reconcile, as
the API does. Once the wave is partly decided (a task is mid-way), one disruption, in turn
from ``ChaosConfig.disruptions`` (``inferledger.chaos_procs``):

- ``kill-child``: SIGKILL the pool process running the task (its message is re-queued);
- ``kill-worker``: SIGKILL the whole worker, main process and pool, and start a new one
  (its unacknowledged message comes back after the visibility timeout);
- ``flush-redis``: FLUSHDB of the broker's database (queued and unacknowledged messages,
  delivery counts: all gone);
- ``restart-redis``: SIGKILL our own Redis server and start it again, empty.

Beat keeps queueing the sweeps. The round ends when every job is decided and then a job
written after that is decided too (so a worker that died after its task finished counts):
that time is the disruption's recovery. At the end no message may stay unacknowledged,
every job must be decided with exactly the transfers its votes call for, no more, and the
journal must replay to its balances (``inferledger.chaos_jobs.audit``).

Used by ``tests/e2e/test_celery_chaos.py`` and ``bench/chaos.py``.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine

from inferledger.chaos_jobs import Audit, SeededJob, audit, seed_wave, undecided
from inferledger.chaos_procs import CeleryCluster, RedisServer
from inferledger.procs import Processes
from ledger.config import Settings
from ledger.db import engine_for
from ledger.parking import list_parked


@dataclass
class ChaosConfig:
    data_dir: Path
    redis_url: str  # the broker; flush-redis empties its database
    database_url: str = ""  # empty: a SQLite file in data_dir
    rounds: int = 3
    jobs_per_wave: int = 150
    disruptions: tuple[str, ...] = ("kill-child", "flush-redis", "kill-worker")
    redis_server: RedisServer | None = None  # the server restart-redis restarts
    settle_timeout_s: float = 60.0
    progress: Callable[[str], None] = lambda _: None


@dataclass
class ChaosReport:
    audit: Audit
    disruptions: Counter[str]
    mid_task: int  # disruptions that struck while a wave was partly decided
    recovery_s: dict[str, list[float]]  # per disruption: until every job was decided
    drained_s: float  # after the last disruption, until no message was unacknowledged
    parked: int
    revived: Counter[str]  # processes that exited and were started again (a supervisor's job)
    elapsed_s: float = field(default=0.0)

    def summary(self) -> str:
        a = self.audit
        worst = ", ".join(f"{k} {max(v):.1f}" for k, v in sorted(self.recovery_s.items()))
        return (
            f"jobs {a.jobs}, disruptions {sum(self.disruptions.values())} "
            f"({self.mid_task} mid-task): lost {a.lost}, doubled {a.doubled}, "
            f"missing {a.missing}, wrong {a.wrong}, parked {self.parked}, "
            f"restarted by the supervisor {dict(self.revived) or 'none'}; "
            f"recovery s (worst): {worst}; acknowledged {self.drained_s:.1f} s after the "
            f"last; {self.elapsed_s:.1f} s in all"
        )


def chaos_settings(cfg: ChaosConfig) -> Settings:
    return Settings(
        data_dir=cfg.data_dir,
        database_url=cfg.database_url,
        redis_url=cfg.redis_url,
        celery_queue=f"inferledger-chaos-{uuid.uuid4().hex[:10]}",
        reconcile_batch_size=10,  # many small units of work: a kill lands inside a task
        replicas=2,
        max_replicas=3,  # three different answers then fail: no chain needed to decide
        fee_bps=1000,
    )


def _wait_mid_wave(cluster: CeleryCluster, reader: Engine, before: int, timeout_s: float) -> bool:
    """Wait until reconciling has started on the newest wave; True if some of it is still
    undecided (a disruption then strikes mid-task)."""
    left = [before]

    def started() -> bool:
        left[0] = undecided(reader)
        return left[0] < before or left[0] == 0

    cluster.wait("reconciling to start", started, timeout_s)
    return left[0] > 0


def _round(
    cfg: ChaosConfig, cluster: CeleryCluster, reader: Engine, seeded: list[SeededJob], kind: str
) -> tuple[bool, float, float]:
    """One wave and one disruption; returns whether it struck mid-task, when, and the
    seconds until the wave and a job written after it were decided."""
    engine = engine_for(cluster.settings.db_url)

    def all_decided() -> bool:
        return undecided(reader) == 0

    seeded.extend(seed_wave(engine, cfg.jobs_per_wave, len(seeded)))
    before = undecided(reader)
    cluster.send("ledger.tasks.reconcile")  # as the API does when a job's answers are in
    mid_task = _wait_mid_wave(cluster, reader, before, cfg.settle_timeout_s)
    left = undecided(reader)
    cluster.disrupt(kind)
    struck = time.monotonic()
    cluster.wait("the wave decided", all_decided, cfg.settle_timeout_s)
    seeded.extend(seed_wave(engine, 1, len(seeded)))  # new work is taken up again
    cluster.send("ledger.tasks.reconcile")
    cluster.wait("a job written after the wave decided", all_decided, cfg.settle_timeout_s)
    recovery_s = time.monotonic() - struck
    cfg.progress(f"{kind} with {left} jobs undecided: recovered in {recovery_s:.1f} s")
    return mid_task, struck, recovery_s


def run_chaos(cfg: ChaosConfig, procs: Processes) -> ChaosReport:
    """Run the scenario with the processes it starts in ``procs``; it stops them all before
    the audit."""
    started = time.monotonic()
    settings = chaos_settings(cfg)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = engine_for(settings.db_url)  # migrated before any worker opens it
    reader = create_engine(settings.db_url)  # plain reads: no write lock taken on SQLite
    cluster = CeleryCluster(procs, settings, redis_server=cfg.redis_server)
    cluster.start_worker()
    cluster.start_beat()
    seeded: list[SeededJob] = []
    done: Counter[str] = Counter()
    recovery: dict[str, list[float]] = defaultdict(list)
    mid_task, struck = 0, time.monotonic()
    try:
        for i in range(cfg.rounds):
            kind = cfg.disruptions[i % len(cfg.disruptions)]
            hit, struck, recovery_s = _round(cfg, cluster, reader, seeded, kind)
            mid_task, done[kind] = mid_task + hit, done[kind] + 1
            recovery[kind].append(recovery_s)
        cluster.wait("every message acknowledged", cluster.broker_quiet, cfg.settle_timeout_s)
        drained_s = time.monotonic() - struck
        parked, revived = len(list_parked(settings)), cluster.revived
    finally:
        reader.dispose()
        for name in ("celery-beat", "celery-worker"):  # before a Redis of our own
            procs.stop(name)
        procs.stop_all()  # nothing writes while the audit reads
    report = audit(engine, seeded, settings.fee_bps)
    chaos = ChaosReport(report, done, mid_task, dict(recovery), drained_s, parked, revived)
    chaos.elapsed_s = time.monotonic() - started
    return chaos
