"""``make bench``: every benchmark, each as a subprocess at two sizes where size matters, and
one table of the figures, each beside the baseline measured in the same run.

Columns: the figure at size 1 and size 2 (the sizes are in the figure's name), the baseline
(measured in the same run, at size 2), the ratio of the figure at size 2 to it, the goal,
and whether it is met. A rate that stays the same from size 1 to size 2 is a cost that
grows linearly; a time that grows by the ratio of the sizes is linear too.

Each benchmark writes bench/results/<name>.json (machine, args, figures, baselines); the
suite keeps a copy per size (<name>@<size>.json) and writes everything it read, with the
table's rows, to bench/results/suite.json.

Usage: ``make bench`` (full sizes, gas included), ``make bench-quick`` (small sizes, no
gas: a smoke run), or ``.venv/bin/python bench/suite.py [--quick] [--gas | --no-gas]
[--extra] [--only system,epoch]`` (``--extra``: also the agreement margins and the
chaos counts, which are not about speed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, machine, table  # noqa: E402

PY = sys.executable


@dataclass
class Step:
    """One benchmark run: its command line, the JSON it writes, the name its copy gets."""

    bench: str
    argv: list[str]
    writes: str
    label: str
    timeout_s: float = 3600.0
    env: dict[str, str] = field(default_factory=dict)


def steps(quick: bool, gas: bool, extra: bool = False) -> list[Step]:
    q = quick
    ingest = [(1_000, 300), (3_000, 300)] if q else [(6_000, 1_500), (20_000, 1_500)]
    reconcile = [(2_000, 200), (6_000, 200)] if q else [(10_000, 1_000), (100_000, 1_000)]
    out = [
        Step("protocol", [PY, "bench/run.py", "--rows", "100" if q else "1000"],
             "protocol.json", "protocol"),
        Step("agent", [PY, "bench/agent.py", "--jobs", "60" if q else "300",
                       "--rounds", "2" if q else "5"], "agent.json", "agent"),
        Step("system", [PY, "bench/system.py", "--sizes", "200,600" if q else "10000,30000",
                        "--latency-requests", "50" if q else "1000"], "system.json", "system",
             timeout_s=7200),
        # what adaptive replication could give MiniLM at best: one replica per job
        Step("system", [PY, "bench/system.py", "--models", "minilm-l6", "--replicas", "1",
                        "--name", "system-r1", "--latency-requests", "0",
                        "--sizes", "200,600" if q else "10000,30000"],
             "system-r1.json", "system-r1", timeout_s=3600),
        # adaptive replication as deployed with it on: trust after 20 agreed replicated jobs,
        # one job in ten of a trusted worker spot-checked; the latency part comes first, so
        # the workers have earned their trust (a running system's state) before throughput
        Step("system", [PY, "bench/system.py", "--models", "digits-cnn,minilm-l6",
                        "--trust-after", "20", "--spot-check-bps", "1000",
                        "--name", "system-adaptive", "--latency-requests", "50" if q else "1000",
                        "--sizes", "200,600" if q else "10000,30000"],
             "system-adaptive.json", "system-adaptive", timeout_s=3600),
        Step("epoch", [PY, "bench/epoch.py", "--sizes", "1000,3000" if q else "10000,100000"],
             "epoch.json", "epoch", timeout_s=7200),
    ]  # fmt: skip
    for jobs, naive in reconcile:
        argv = [PY, "bench/reconcile.py", "--jobs", str(jobs), "--naive-jobs", str(naive)]
        out.append(Step("reconcile", argv, "reconcile-sqlite.json", f"reconcile@{jobs}"))
    for requests, naive in ingest:
        argv = [PY, "bench/ingest.py", "--requests", str(requests)]
        argv += ["--naive-requests", str(naive)]
        out.append(Step("ingest", argv, "ingest-sqlite.json", f"ingest@{requests}"))
    if extra:  # minutes each, and not about speed: agreement margins, chaos counts
        argv = [PY, "bench/agreement.py"] + (["--jobs", "200"] if q else [])
        out.append(Step("agreement", argv, "agreement.json", "agreement"))
        argv = [PY, "bench/chaos.py", "--rounds", "2" if q else "8"]
        out.append(Step("chaos", argv, "chaos.json", "chaos", timeout_s=3600))
    if gas:
        hardhat = str(ROOT / "node_modules" / ".bin" / "hardhat")
        out.append(Step("gas", [hardhat, "run", "bench/gas.js"], "gas.json", "gas"))
    return out


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C first, so that the benchmark stops the processes it started; then kill."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_step(step: Step, log_dir: Path) -> dict[str, Any] | None:
    """Run one benchmark (its output shown and logged); its JSON, or None if it failed."""
    written = RESULTS / step.writes
    written.unlink(missing_ok=True)
    print(f"\n=== {step.label}: {' '.join(Path(a).name if a == PY else a for a in step.argv)}")
    started = time.monotonic()
    log = log_dir / f"{step.label}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        watchdog = threading.Timer(step.timeout_s, _interrupt, (proc,))  # a hung one ends
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                fh.write(line)
            rc = proc.wait()
        finally:
            watchdog.cancel()
    seconds = time.monotonic() - started
    if rc != 0 or not written.exists():
        print(f"=== {step.label} FAILED (exit {rc}, {seconds:.0f} s); see {log}")
        return None
    data: dict[str, Any] = json.loads(written.read_text())
    if "machine" not in data or "figures" not in data:  # a bench with a shape of its own
        data = {"name": step.label, "machine": machine(), "figures": data, "baselines": {}}
    data["wall_s"] = round(seconds, 1)
    if step.label != step.writes.removesuffix(".json"):
        (RESULTS / f"{step.label}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"=== {step.label} done in {seconds:.0f} s")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--gas",
        action=argparse.BooleanOptionalAction,
        help="bench/gas.js on Hardhat's in-process network, about a minute (default: on in a "
        "full run, off in a quick one)",
    )
    parser.add_argument(
        "--extra", action="store_true", help="also bench/agreement.py and bench/chaos.py"
    )
    parser.add_argument("--only", default="", help="benchmarks to run, e.g. system,epoch")
    args = parser.parse_args()
    if args.gas is None:
        args.gas = not args.quick
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir()
    only = set(filter(None, args.only.split(",")))
    results: dict[str, Any] = {}
    started = time.monotonic()
    for step in steps(args.quick, args.gas, args.extra):
        if only and step.bench not in only:
            continue
        found = run_step(step, log_dir)
        if found is not None:
            results[step.label] = found
    from bench.figures import rows

    table_rows = rows(results)
    heads = ["figure", "size 1", "size 2", "baseline", "ratio", "goal", "met?"]
    print("\n" + table(heads, [r[:7] for r in table_rows]))
    failed = [s.label for s in steps(args.quick, args.gas, args.extra) if s.label not in results]
    failed = [f for f in failed if not only or f.split("@")[0] in only]
    if failed:
        print(f"\nfailed or missing: {', '.join(failed)} (logs in {log_dir})")
    m = machine()
    mode = "quick" if args.quick else "full"
    print(f"\nmachine: {m['cpu_model']}, {m['cores']} cores, load {m['load_average']}, "
          f"Python {m['python']}, onnxruntime {m.get('onnxruntime')}; "
          f"{mode} run, {time.monotonic() - started:.0f} s")  # fmt: skip
    out = {
        "name": "suite",
        "mode": mode,
        "machine": m,
        "wall_s": round(time.monotonic() - started, 1),
        "rows": [dict(zip([*heads, "note"], r, strict=False)) for r in table_rows],
        "results": results,
        "failed": failed,
    }
    (RESULTS / "suite.json").write_text(json.dumps(out, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
