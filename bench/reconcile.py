"""Reconcile throughput in one Celery worker process, against the naive baseline measured in
the same run: one Celery task per job, each deciding its job in its own unit of work.

Seeds N submitted jobs (two agreeing replicas each, the price held in escrow), starts a real
Celery worker (solo pool: one process) on the real Redis, sends the work and times it until
the database shows every job decided; then checks every invariant, including a full replay
of the journal. Prints a table and writes bench/results/reconcile-<database>.json.

Usage: ``make bench`` or ``.venv/bin/python bench/reconcile.py [--jobs 20000]
[--naive-jobs 1000] [--postgres]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, insert
from sqlmodel import Session, col, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from inferledger.procs import Processes, wait_until  # noqa: E402
from ledger import invariants, journal  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.context import Context  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.journal import TransferKind, TransferSpec  # noqa: E402
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus  # noqa: E402

CLIENT = "0x" + "c1" * 20
CONTRIBUTORS = ["0x" + f"{0xA0 + i:02x}" * 20 for i in range(8)]
PRICE = 10**15 + 7
NAIVE_TASK = "bench.reconcile_one"
OUTPUTS = '{"logits":{"dtype":"float32","shape":[1,1],"data":"AAAAAA=="}}'


def seed(ctx: Context, count: int) -> None:
    """``count`` submitted jobs, each with two agreeing votes from distinct contributors."""
    ids = ["0x" + os.urandom(32).hex() for _ in range(count)]
    now = int(time.time())
    fingerprint, result = "0x" + "f1" * 32, "0x" + "e1" * 32
    jobs: list[dict[str, Any]] = []
    votes: list[dict[str, Any]] = []
    for n, jid in enumerate(ids):
        jobs.append(
            {
                "id": jid,
                "client": CLIENT,
                "model_hash": "0x" + "ab" * 32,
                "input_hash": "0x" + "cd" * 32,
                "rows": 1,
                "price_wei": PRICE,
                "voucher_cumulative_wei": PRICE * (n + 1),
                "voucher_expiry": now + 7200,
                "voucher_signature": "0x" + "00" * 65,
                "inputs_json": "{}",
                "replicas_wanted": 2,
                "status": JobStatus.SUBMITTED,
                "created_at": now,
            }
        )
        for r in range(2):
            owner = CONTRIBUTORS[(n + r) % len(CONTRIBUTORS)]
            votes.append(
                {
                    "job_id": jid,
                    "worker": owner,
                    "contributor": owner,
                    "deadline": now + 600,
                    "status": AssignmentStatus.SUBMITTED,
                    "fingerprint": fingerprint,
                    "fingerprint_json": "{}",
                    "result_hash": result,
                    "signature": "0x" + "11" * 65,
                    "outputs_json": OUTPUTS,
                    "submitted_at": now,
                }
            )
    with session_scope(ctx.engine) as session:
        deposit = TransferSpec(
            f"deposit:{CLIENT}:{uuid.uuid4().hex}",
            journal.VAULT,
            journal.client_account(CLIENT),
            PRICE * count,
            TransferKind.DEPOSIT,
        )
        holds = [
            TransferSpec(
                f"hold:{j}",
                journal.client_account(CLIENT),
                journal.ESCROW,
                PRICE,
                TransferKind.HOLD,
                j,
            )
            for j in ids
        ]
        journal.post_batch(session, [deposit, *holds])
        session.execute(insert(Job), jobs)
        session.execute(insert(Assignment), votes)
        invariants.check_money(session)


def undecided(ctx: Context) -> int:
    with Session(ctx.engine) as session:
        return int(
            session.exec(
                select(func.count()).select_from(Job).where(col(Job.status) == JobStatus.SUBMITTED)
            ).one()
        )


def run_worker(ctx: Context, procs: Processes, env: dict[str, str], name: str) -> None:
    from ledger.celery_app import app

    node = f"{name}-{uuid.uuid4().hex[:6]}@bench"
    argv = [
        str(Path(sys.executable).with_name("celery")),
        "-A",
        "ledger.celery_app",
        "worker",
        "--pool",
        "solo",
        "-n",
        node,
        "-Q",
        ctx.settings.celery_queue,
        "-I",
        "bench.reconcile_tasks",
        "--loglevel",
        "WARNING",
    ]
    procs.start(name, argv, env=env, cwd=ROOT)
    wait_until(f"the Celery worker {node}", lambda: bool(app.control.ping([node], timeout=0.5)), 60)


def measure(ctx: Context, env: dict[str, str], count: int, naive: bool, log_dir: Path) -> float:
    """Jobs decided per second by one Celery worker process."""
    from ledger.celery_app import app

    def send(tasks: int) -> None:
        for _ in range(tasks):
            app.send_task(
                NAIVE_TASK if naive else "ledger.tasks.reconcile", queue=ctx.settings.celery_queue
            )

    def wait(procs: Processes) -> None:
        while undecided(ctx):
            procs.check_alive()
            time.sleep(0.02)

    with Processes(log_dir) as procs:
        run_worker(ctx, procs, env, "naive" if naive else "batched")
        seed(ctx, 1)  # warm up: the worker builds its context (engine, models) on one job
        send(1)
        wait(procs)
        seed(ctx, count)
        start = time.perf_counter()
        send(count if naive else 1)
        wait(procs)
        elapsed = time.perf_counter() - start
    with Session(ctx.engine) as session:
        invariants.check_full(session)
    return count / elapsed


def fresh_postgres() -> str:
    admin = os.environ.get("INFERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"il_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://{admin.rsplit('/', 1)[0].split('://', 1)[1]}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs for the batched run")
    parser.add_argument("--naive-jobs", type=int, default=1_000, help="jobs for the baseline")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="il-bench-") as tmp:
        for mode, count in (("naive", args.naive_jobs), ("batched", args.jobs)):
            data = Path(tmp) / mode
            url = fresh_postgres() if args.postgres else f"sqlite:///{data / 'ledger.db'}"
            env = {
                "INFERLEDGER_DATA_DIR": str(data),
                "INFERLEDGER_DATABASE_URL": url,
                "INFERLEDGER_CELERY_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
                "PYTHONPATH": str(ROOT),
            }
            os.environ.update(env)
            ctx = Context(Settings())
            figures[mode] = measure(ctx, env, count, mode == "naive", data / "logs")
            print(f"{mode:8} {count:>7,} jobs  {figures[mode]:>9,.0f} jobs/s", flush=True)
    ratio = figures["batched"] / figures["naive"]
    database = "postgresql" if args.postgres else "sqlite"
    print(f"batched / naive = {ratio:.1f}x on {database} (goal: at least 5,000 jobs/s)")
    write_result(
        f"reconcile-{database}",
        {
            "database": database,
            "jobs": args.jobs,
            "naive_jobs": args.naive_jobs,
            "jobs_per_s": round(figures["batched"]),
            "naive_jobs_per_s": round(figures["naive"]),
            "ratio": round(ratio, 2),
        },
        {"naive_jobs_per_s": round(figures["naive"])},
        vars(args),
    )


if __name__ == "__main__":
    main()
