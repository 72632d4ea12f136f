"""Agreement and detection (issue 5) with real onnxruntime sessions and the real tally.

Honest workers in different fingerprint classes (optimisation level all or disabled, the
latter standing in for another ISA tier; one or two threads) and in separate sessions must
reach consensus on every one of 1,000 one-row jobs per model. A dishonest worker (weights
perturbed by 1e-3 or 1e-5 relative, an int8 or float16 copy, an input changed by one step)
claims an honest class and must be outvoted, with a safety fault, on every job it touches:
against its twin's class (where hashes must match) and alone in its class against two
other classes (where the model's ``tolerance_abs`` decides). Which jobs each worker runs:
``agreement_cases.py``; the figures: ``bench/agreement.py``.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator

import pytest
from agreement_cases import CASES, JOBS_PER_MODEL
from agreement_support import (
    ADVERSARIES,
    HONEST_SETTINGS,
    Runs,
    closest_approach,
    decide,
    honest_spread,
    run_case,
    tally_ballots,
)


@pytest.fixture(scope="module", params=sorted(CASES))
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runs]:
    tmp = tmp_path_factory.mktemp(request.param)
    yield run_case(CASES[request.param](tmp, JOBS_PER_MODEL), tmp)
    shutil.rmtree(tmp, ignore_errors=True)  # minilm-l6's dishonest files are ~400 MB


def test_agreement_honest_settings_reach_consensus_on_every_job(runs: Runs) -> None:
    workers = [*runs.honest.values(), runs.twin]
    split: list[int] = []
    for job in range(len(runs.case.jobs)):
        ballots = [w[job] for w in workers if job in w]
        everyone = tally_ballots(ballots, runs.tolerance)
        pairs = [decide(pair, runs.tolerance) for pair in itertools.combinations(ballots, 2)]
        if len(ballots) < 2 or not everyone.unanimous or not all(d.accepted for d in pairs):
            split.append(job)
    worst = honest_spread(runs)
    first, second = list(runs.honest.values())[:2]
    assert len(first) == len(second) == len(runs.case.jobs) >= 1_000
    assert len({b.fingerprint for w in workers for b in w.values()}) == len(HONEST_SETTINGS)
    assert not split, f"{len(split)} jobs without consensus (first {split[:5]}); {worst}"
    assert 0 < max(worst.values()) < runs.tolerance, worst  # classes differ, within tolerance


def test_agreement_one_setting_in_separate_sessions_is_bit_identical(runs: Runs) -> None:
    first = next(iter(runs.honest.values()))
    assert runs.twin and all(b.answer == first[job].answer for job, b in runs.twin.items())
    assert len({b.result_hash for b in first.values()}) == len(first)  # each job its answer


@pytest.mark.parametrize("adversary", ADVERSARIES)
def test_agreement_dishonest_worker_is_outvoted_on_every_job(runs: Runs, adversary: str) -> None:
    """Against its twin's class, then alone in its class against two honest classes. The
    first two ballots are the job's replicas: the dishonest one with one honest one never
    stands (the reconciler asks the third), and the three decide by majority."""
    same, disabled, two_threads = runs.honest.values()
    bad = runs.dishonest[adversary]
    missed: list[tuple[int, str]] = []
    for job, cheat in bad.items():
        assert cheat.fingerprint == same[job].fingerprint  # it claims an honest class
        scenarios = {
            "same class": [same[job], cheat, disabled[job]],
            "other classes": [cheat, disabled[job], two_threads[job]],
        }
        for scenario, ballots in scenarios.items():
            decision = decide(ballots, runs.tolerance)
            honest_names = {b.worker for b in ballots} - {cheat.worker}
            caught = (
                decision.accepted
                and decision.faulted == {cheat.worker}
                and honest_names <= decision.agreeing
                and decision.tally.winner != cheat.answer
            )
            if not caught:
                missed.append((job, scenario))
    closest = closest_approach(runs, adversary)
    assert len(bad) >= len(runs.case.jobs) // runs.case.stride
    assert not missed, (
        f"{adversary} escaped on {len(missed)} of {len(bad)} jobs (first {missed[:5]}); "
        f"closest to honest {closest:.3g}, tolerance {runs.tolerance:.3g}"
    )
    assert closest > runs.tolerance, f"{adversary}: {closest:.3g} <= {runs.tolerance:.3g}"
