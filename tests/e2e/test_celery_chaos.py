"""Celery on Redis made reliable, on real processes: a prefork worker and beat reconcile
jobs while their pool processes and the whole worker are SIGKILLed mid-task, the broker's
database is flushed and the Redis server restarts; no job is lost, no money moves twice.
A task that kills its worker every time is parked after ``max_deliveries`` and the worker
goes on with other work.

The figures (``pytest -s``): jobs, disruptions, lost, doubled, recovery seconds
(``inferledger.chaos``; ``bench/chaos.py`` runs the same scenario on its own)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine

from inferledger.chaos import ChaosConfig, ChaosReport, chaos_settings, run_chaos
from inferledger.chaos_jobs import audit, seed_wave, undecided
from inferledger.chaos_procs import CeleryCluster, RedisServer, claimed_redis_db
from inferledger.procs import Processes, wait_until
from ledger.db import engine_for
from ledger.parking import list_parked

pytestmark = pytest.mark.e2e
MAX_DELIVERIES = 2
POISON = "tests.chaos.poison"  # in tests/e2e/chaos_poison.py, which only the worker imports


@pytest.fixture
def chaos_redis(redis_url: str) -> Iterator[str]:
    """A Redis database of this test's own on the shared server, flushed as it likes."""
    with claimed_redis_db(redis_url) as url:
        yield url


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with Processes(tmp_path / "logs") as started:  # every process stopped, pass or fail
        yield started


def _assert_nothing_lost_or_doubled(report: ChaosReport, rounds: int, jobs: int) -> None:
    assert report.audit.jobs == rounds * (jobs + 1)  # a wave, then one job after recovery
    assert (report.audit.lost, report.audit.doubled) == (0, 0)
    assert (report.audit.missing, report.audit.wrong) == (0, 0)
    assert report.parked == 0  # no reconcile message was hurt max_deliveries times
    assert report.mid_task >= 1  # at least one disruption struck a task mid-way


def test_celery_chaos_kills_and_flushes_lose_no_job_and_pay_none_twice(
    chaos_redis: str, sqlite_url: str, tmp_path: Path, procs: Processes
) -> None:
    kinds = ("kill-child", "flush-redis", "kill-worker")
    cfg = ChaosConfig(
        tmp_path / "data", chaos_redis, sqlite_url, rounds=3, jobs_per_wave=150, disruptions=kinds
    )
    report = run_chaos(cfg, procs)
    print(f"\ncelery chaos, SQLite, shared Redis flushed: {report.summary()}")
    _assert_nothing_lost_or_doubled(report, 3, 150)
    assert report.disruptions == Counter(kinds)


@pytest.mark.postgres
def test_celery_chaos_redis_restarts_on_postgres_lose_no_job_and_pay_none_twice(
    pg_url: str, tmp_path: Path, procs: Processes
) -> None:
    server = RedisServer(procs)
    server.start()
    kinds = ("kill-child", "restart-redis")
    cfg = ChaosConfig(
        tmp_path / "data",
        server.url,
        pg_url,
        rounds=2,
        jobs_per_wave=150,
        disruptions=kinds,
        redis_server=server,
    )
    report = run_chaos(cfg, procs)
    print(f"\ncelery chaos, PostgreSQL, own Redis restarted: {report.summary()}")
    _assert_nothing_lost_or_doubled(report, 2, 150)
    assert report.disruptions == Counter(kinds)


def test_celery_poison_task_is_parked_after_max_deliveries_and_work_goes_on(
    chaos_redis: str, sqlite_url: str, tmp_path: Path, procs: Processes
) -> None:
    settings = chaos_settings(ChaosConfig(tmp_path / "data", chaos_redis, sqlite_url))
    settings.data_dir.mkdir(parents=True)
    engine, reader = engine_for(settings.db_url), create_engine(settings.db_url)
    cluster = CeleryCluster(
        procs,
        settings,
        include=("tests.e2e.chaos_poison",),
        env={"INFERLEDGER_MAX_DELIVERIES": str(MAX_DELIVERIES)},
    )
    worker = cluster.start_worker()
    runs = f"{settings.celery_queue}:poison-runs"
    seeded = seed_wave(engine, 60, 0)
    poison_id = cluster.send(POISON, runs)
    cluster.send("ledger.tasks.reconcile")
    wait_until("the poison message parked", lambda: bool(list_parked(settings)), 60)
    wait_until("the first wave decided", lambda: undecided(reader) == 0, 60)
    seeded += seed_wave(engine, 60, 60)  # work queued after the parking is done too
    cluster.send("ledger.tasks.reconcile")
    wait_until("the second wave decided", lambda: undecided(reader) == 0, 60)
    wait_until("every delivery count cleared", cluster.broker_quiet, 30)

    parked = list_parked(settings)
    print(f"\npoison parked: {parked}")
    assert [(p.task, p.id, p.args, p.kwargs) for p in parked] == [(POISON, poison_id, [runs], {})]
    assert parked[0].deliveries == MAX_DELIVERIES + 1 and parked[0].queue == cluster.queue
    broker = redis.Redis.from_url(settings.redis_url)
    assert int(broker.get(runs) or 0) == MAX_DELIVERIES  # run max times, never once parked
    assert worker.poll() is None  # the worker's main process lived through every kill
    procs.stop_all()
    reader.dispose()
    result = audit(engine, seeded, settings.fee_bps)
    assert (result.jobs, result.lost, result.doubled, result.missing) == (120, 0, 0, 0)
    log = (tmp_path / "logs" / "celery-worker.log").read_text()
    assert f"parked task {POISON}[{poison_id}] after {MAX_DELIVERIES + 1} deliveries" in log
    assert log.count("exited with 'signal 9 (SIGKILL)'") == MAX_DELIVERIES
