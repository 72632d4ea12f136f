"""Celery on Redis under chaos, on its own: the scenario of tests/e2e/test_celery_chaos.py
(``inferledger.chaos``) with a Redis server of its own, so that every disruption can run.

Prints the figures and writes bench/results/chaos.json: jobs, disruptions, jobs lost,
effects applied twice, seconds to recover from each kind of disruption.
Usage: ``.venv/bin/python bench/chaos.py --rounds 8`` (``--database-url URL`` for
PostgreSQL, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/DB``: an empty database;
``--keep DIR`` keeps the data and the processes' logs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402
from inferledger.chaos import ChaosConfig, ChaosReport, run_chaos  # noqa: E402
from inferledger.chaos_procs import DISRUPTIONS, RedisServer  # noqa: E402
from inferledger.procs import Processes  # noqa: E402


def run(args: argparse.Namespace, data_dir: Path) -> ChaosReport:
    with Processes(data_dir / "logs") as procs:
        server = RedisServer(procs)
        server.start()
        cfg = ChaosConfig(
            data_dir / "data",
            server.url,
            args.database_url,
            rounds=args.rounds,
            jobs_per_wave=args.jobs_per_wave,
            disruptions=tuple(args.disruptions.split(",")),
            redis_server=server,
            progress=lambda line: print(f"{time.strftime('%X')} {line}", flush=True),
        )
        return run_chaos(cfg, procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="disruptions, one per round")
    parser.add_argument("--jobs-per-wave", type=int, default=200)
    parser.add_argument("--disruptions", default=",".join(DISRUPTIONS), help="in turn")
    parser.add_argument("--database-url", default="", help="default: SQLite in the data dir")
    parser.add_argument("--keep", type=Path, help="a folder to keep the data and logs in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferledger-chaos-") as scratch:
        report = run(args, args.keep or Path(scratch))
    a = report.audit
    print(f"\njobs {a.jobs}  lost {a.lost}  doubled {a.doubled}  missing {a.missing}")
    print(f"disruptions {sum(report.disruptions.values())} ({report.mid_task} mid-task)")
    print(f"restarted by the supervisor: {dict(report.revived) or 'none'}")
    print(f"{'disruption':<14} {'times':>5} {'recovery s median':>18} {'worst':>6}")
    for kind, seconds in sorted(report.recovery_s.items()):
        median = statistics.median(seconds)
        print(f"{kind:<14} {len(seconds):>5} {median:>18.1f} {max(seconds):>6.1f}")
    print(f"all acknowledged {report.drained_s:.1f} s after the last; {report.elapsed_s:.1f} s")
    figures = {
        "jobs": a.jobs,
        "lost": a.lost,
        "doubled": a.doubled,
        "missing": a.missing,
        "wrong": a.wrong,
        "parked": report.parked,
        "disruptions": dict(report.disruptions),
        "mid_task": report.mid_task,
        "revived": dict(report.revived),
        "recovery_s_median": {k: statistics.median(v) for k, v in report.recovery_s.items()},
        "recovery_s_worst": {k: max(v) for k, v in report.recovery_s.items()},
        "drained_s": report.drained_s,
        "elapsed_s": report.elapsed_s,
    }
    write_result(
        "chaos", figures, {"lost_and_doubled": "0 expected"}, vars(args) | {"keep": str(args.keep)}
    )


if __name__ == "__main__":
    main()
