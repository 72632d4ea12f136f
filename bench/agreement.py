"""Agreement and detection figures per model (issue 5): how far honest settings differ from
one another and how close each dishonest worker comes to them, against the model's
``tolerance_abs``, over the same 1,000 one-row jobs as ``tests/worker/test_agreement.py``.

Honest settings: optimisation level all or disabled (the latter standing in for another ISA
tier), one or two intra-op threads. Dishonest workers: weights perturbed by 1e-3 and 1e-5
(relative, uniform), an int8 (dynamic quantization) and a float16-weights copy, and an input
changed by one step. Each dishonest worker is run through the reconciler's rule in two
settings (its twin's class, and alone in its class) and counted as caught when it is
outvoted with a safety fault.

The tests run the third honest setting, the twin session and the dishonest workers on a
sample of minilm-l6's jobs (its ``disabled`` setting is slow); ``--every-job`` runs every
worker on every job.

Prints the figures and writes bench/results/agreement.json. Usage:
``.venv/bin/python bench/agreement.py [--jobs 1000] [--model digits-cnn] [--every-job]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "worker"))

from agreement_cases import CASES, JOBS_PER_MODEL  # noqa: E402
from agreement_support import (  # noqa: E402
    Runs,
    closest_approach,
    decide,
    honest_spread,
    run_case,
)

from bench.common import write_result  # noqa: E402


def caught(runs: Runs, adversary: str) -> tuple[int, int]:
    """Jobs on which the dishonest worker is outvoted with a fault, in both settings."""
    same, disabled, two_threads = runs.honest.values()
    hits = 0
    bad = runs.dishonest[adversary]
    for job, cheat in bad.items():
        decisions = [
            decide([same[job], cheat, disabled[job]], runs.tolerance),
            decide([cheat, disabled[job], two_threads[job]], runs.tolerance),
        ]
        hits += all(d.accepted and d.faulted == {cheat.worker} for d in decisions)
    return hits, len(bad)


def report(name: str, jobs: int, every_job: bool) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        case = CASES[name](Path(tmp), jobs)
        runs = run_case(replace(case, stride=1) if every_job else case, Path(tmp))
    tolerance = runs.tolerance
    sampled = len(runs.case.sampled)
    print(f"\n{name}: {len(runs.case.jobs)} jobs, tolerance_abs {tolerance:.3g}")
    print(f"  all/t1 and disabled/t1 on every job; the others on {sampled}")
    out: dict[str, Any] = {"jobs": len(runs.case.jobs), "tolerance_abs": tolerance}
    out["sampled"], out["honest"], out["dishonest"] = sampled, {}, {}
    print(f"  {'honest pair':<40} {'max abs diff':>13} {'/ tolerance':>12}")
    for pair, diff in honest_spread(runs).items():
        print(f"  {pair:<40} {diff:>13.3g} {diff / tolerance:>12.3f}")
        out["honest"][pair] = {"max_abs_diff": diff, "over_tolerance": diff / tolerance}
    print(f"  {'dishonest worker':<40} {'min abs diff':>13} {'/ tolerance':>12} {'caught':>12}")
    for adversary in runs.dishonest:
        diff = closest_approach(runs, adversary)
        hits, total = caught(runs, adversary)
        print(f"  {adversary:<40} {diff:>13.3g} {diff / tolerance:>12.1f} {hits:>6}/{total}")
        out["dishonest"][adversary] = {
            "min_abs_diff": diff,
            "over_tolerance": diff / tolerance,
            "caught": hits,
            "of": total,
        }
    print(f"  ({time.perf_counter() - started:.1f} s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CASES), action="append")
    parser.add_argument("--jobs", type=int, default=JOBS_PER_MODEL)
    parser.add_argument(
        "--every-job", action="store_true", help="every worker on every job (the tests sample)"
    )
    args = parser.parse_args()
    figures = {
        name: report(name, args.jobs, args.every_job) for name in args.model or sorted(CASES)
    }
    write_result("agreement", figures, {"tolerance_abs": "each model's manifest"}, vars(args))


if __name__ == "__main__":
    main()
