"""``inferledger audit --replay``: jobs run again by the auditor with the worker's own code.

One real world (``tests/api/api_harness.py``): the API over a real Hardhat node and SQLite,
three staked contributors whose devices compute real digits-cnn outputs with onnxruntime and
sign real attestations, the real reconciler, two epochs closed and posted on chain.

Epoch 1 is honest: two jobs answered by all three in this machine's own fingerprint class
(replayed bit for bit), one contested across classes whose consensus is in a class this
machine cannot run (replayed within tolerance of the outputs the file reveals), and one
answered by all three in that foreign class (not comparable: never picked). In epoch 2 the
three collude: every vote is signed and consistent, so every other check holds, but the
outputs are the model's on other inputs; once in this machine's class, once contested
across classes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_harness import ApiEnv, Arrays, api_env, own_celery_queue, samples, served, wire  # noqa: E402

from inferledger.audit import Auditor, AuditReport  # noqa: E402
from inferledger.audit_replay import Replayer, ReplaySummary  # noqa: E402
from ledger.config import REPO_ROOT  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.epochs import close_epoch  # noqa: E402
from ledger.models import Job  # noqa: E402
from protocol.contracts import CONTRACT_NAMES, artifact  # noqa: E402
from protocol.fingerprint import Fingerprint  # noqa: E402

ARTIFACTS = REPO_ROOT / "artifacts"
MODELS = REPO_ROOT / "models"
NUDGE = 4e-6  # a foreign class's difference: within digits-cnn's tolerance (2e-5)
REPLAY_FAULTS = {"replay_inputs", "replay_input_hash", "replay_run", "replay_mismatch"}


@dataclass
class World:
    env: ApiEnv
    url: str  # the API behind a real HTTP server
    honest: list[str]  # epoch 1's job ids: own class, own class, contested, foreign only
    colluded: list[str]  # epoch 2's: own class, contested


def _foreign(env: ApiEnv) -> Fingerprint:
    """A class no auditor here can run: another onnxruntime version."""
    own = env.model.fingerprint
    return Fingerprint("0.0.0-elsewhere", own.provider, own.isa, own.opt_level, own.threads)


def _answer(env: ApiEnv, inputs: Arrays, votes: list[tuple[Fingerprint, Arrays]]) -> str:
    """A paid job whose three replicas answer (class, outputs) each, signed by their own
    device keys; reconciled. Returns its id."""
    job_id = str(env.submit_job(inputs)["job_id"])
    for c, (fp, outputs) in zip(env.assigned(job_id), votes, strict=True):
        (mine,) = [a for a in env.pull(c) if a["job_id"] == job_id]
        item = env.result_item(mine, c.device, outputs=outputs, fingerprint=fp)
        (result,) = env.post_results(c, [item])
        assert result["status"] == "accepted", result
    assert env.reconcile().accepted == 1
    return job_id


def _epoch(env: ApiEnv, plans: list[tuple[Arrays, list[tuple[Fingerprint, Arrays]]]]) -> list[str]:
    jobs = [_answer(env, inputs, votes) for inputs, votes in plans]
    assert close_epoch(env.ctx) is not None
    return jobs


@pytest.fixture(scope="module")
def world(chain: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("replay")
    with (
        own_celery_queue(redis_url, "inferledger-replay-tests-"),
        api_env(chain.w3, chain.rpc_url, chain.keys, data_dir, replicas=3, max_replicas=3) as env,
    ):
        env.sign_in_all()
        own, foreign = env.model.fingerprint, _foreign(env)
        x = [samples(1, i) for i in range(6)]
        y = [env.model.run(a) for a in x]
        wrong = env.model.run(samples(1, 100))  # the model's answer to other inputs
        near = {k: v + np.float32(NUDGE) for k, v in y[2].items()}
        wrong_near = {k: v + np.float32(NUDGE) for k, v in wrong.items()}
        honest = _epoch(
            env,
            [
                (x[0], [(own, y[0])] * 3),
                (x[1], [(own, y[1])] * 3),
                (x[2], [(foreign, near), (foreign, near), (own, y[2])]),  # foreign consensus
                (x[3], [(foreign, y[3])] * 3),
            ],
        )
        colluded = _epoch(
            env,
            [
                (x[4], [(own, wrong)] * 3),
                (x[5], [(foreign, wrong_near), (foreign, wrong_near), (own, wrong)]),
            ],
        )
        with served(env.http.app) as url:
            yield World(env, url, honest, colluded)


def _fetch_inputs(env: ApiEnv) -> Any:
    def fetch(n: int, job_id: str) -> bytes:
        response = env.http.get(f"/v1/epochs/{n}/jobs/{job_id}/inputs")
        response.raise_for_status()
        return bytes(response.content)

    return fetch


def _audit(
    world: World, upto: int | None, count: int, seed: int
) -> tuple[AuditReport, ReplaySummary]:
    """The audit of the files the API serves, then a replay with inputs from the API."""
    env = world.env
    abis = {n: artifact(ARTIFACTS, n)["abi"] for n in CONTRACT_NAMES}
    tolerances = {sha: m.tolerance_abs for sha, m in env.ctx.models.items()}
    auditor = Auditor(
        env.ctx.chain.w3,
        env.deployment,
        abis,
        lambda n: env.http.get(f"/v1/epochs/{n}/file").content,
        tolerances,
    )
    report = auditor.audit(upto)
    summary = Replayer(_fetch_inputs(env), MODELS).replay(report, auditor.documents, count, seed)
    return report, summary


def _outcomes(summary: ReplaySummary) -> dict[str, tuple[str, str | None]]:
    return {j.job_id: (j.outcome, j.compared) for j in summary.jobs}


@pytest.mark.chain
def test_replay_honest_epoch_agrees(world: World) -> None:
    """Every comparable job of the honest epoch agrees: bit for bit in this machine's class,
    within tolerance of the revealed outputs in the foreign one; the foreign-only job is
    counted and not picked."""
    report, summary = _audit(world, 1, 10, seed=7)
    assert report.faults == [] and report.ok
    own_a, own_b, contested, foreign_only = world.honest
    assert _outcomes(summary) == {
        own_a: ("agrees", "exact"),
        own_b: ("agrees", "exact"),
        contested: ("agrees", "tolerance"),
    }
    assert foreign_only not in _outcomes(summary)
    assert (summary.accepted, summary.comparable) == (4, 3)
    (diff,) = [j.max_abs_diff for j in summary.jobs if j.compared == "tolerance"]
    assert diff is not None and 0 < diff < 2e-5
    assert {k: report.checks[k] for k in REPLAY_FAULTS} == dict.fromkeys(REPLAY_FAULTS, 3)
    assert report.as_dict()["replay"]["seed"] == 7


@pytest.mark.chain
def test_replay_names_colluded_results(world: World) -> None:
    """Colluding replicas pass every other check (their votes are signed and agree); the
    replay names each of their jobs, in the consensus class and across classes."""
    report, summary = _audit(world, None, 10, seed=1)
    assert report.epochs == [1, 2]
    assert [f for f in report.faults if f["check"] not in REPLAY_FAULTS] == []
    own_class, contested = world.colluded
    faults = {(f["check"], f["epoch"], f["detail"].split(":")[0]) for f in report.faults}
    assert faults == {
        ("replay_mismatch", 2, f"job {own_class}"),
        ("replay_mismatch", 2, f"job {contested}"),
    }
    outcomes = _outcomes(summary)
    assert outcomes[own_class] == ("mismatch", "exact")
    assert outcomes[contested] == ("mismatch", "tolerance")
    assert all(outcomes[j][0] == "agrees" for j in world.honest[:3])
    assert not report.ok


@pytest.mark.chain
def test_replay_names_inputs_that_do_not_hash(world: World) -> None:
    """An API that serves other inputs than the job's (its stored row altered) is caught by
    the input hash, and one that serves none by the inputs check; the rest still agree."""
    altered, missing = world.honest[0], world.honest[1]
    with session_scope(world.env.ctx.engine) as session:
        job, gone = session.get(Job, altered), session.get(Job, missing)
        assert job is not None and gone is not None
        original = job.inputs_json
        job.inputs_json = json.dumps(wire(samples(1, 50)))  # well formed, another digit
        gone.epoch = 2  # not a job of epoch 1 any more: not found there
    try:
        report, summary = _audit(world, 1, 10, seed=3)
    finally:
        with session_scope(world.env.ctx.engine) as session:
            job, gone = session.get(Job, altered), session.get(Job, missing)
            assert job is not None and gone is not None
            job.inputs_json, gone.epoch = original, 1
    assert {(f["check"], f["detail"].split(":")[0]) for f in report.faults} == {
        ("replay_input_hash", f"job {altered}"),
        ("replay_inputs", f"job {missing}"),
    }
    outcomes = _outcomes(summary)
    assert (
        outcomes[altered] == ("input_hash", None) and outcomes[missing][0] == "inputs_unavailable"
    )
    assert outcomes[world.honest[2]] == ("agrees", "tolerance")


@pytest.mark.chain
def test_replay_pick_is_seeded(world: World) -> None:
    """The same seed picks the same jobs; every pick is among the comparable ones."""
    env = world.env
    replayer = Replayer(_fetch_inputs(env), MODELS)
    documents = {n: json.loads(env.http.get(f"/v1/epochs/{n}/file").content) for n in (1, 2)}
    picks = [
        [c.job["job_id"] for c in replayer.pick(documents, 2, seed)[1]] for seed in (5, 5, 6, 7)
    ]
    assert picks[0] == picks[1] and all(len(p) == 2 for p in picks)
    comparable = set(world.honest[:3]) | set(world.colluded)
    assert all(set(p) <= comparable for p in picks)
    assert len({tuple(p) for p in picks}) > 1  # three seeds of ten pairs: not all alike


@pytest.mark.chain
def test_replay_fails_when_not_one_job_can_be_compared(world: World) -> None:
    """Fingerprint classes are the workers' own word: replicas that all declare a class no
    auditor runs, and contest nothing, would never be picked. A replay that can compare
    none of the accepted jobs fails the audit (replay_coverage) instead of passing empty."""
    env = world.env
    document = json.loads(env.http.get("/v1/epochs/1/file").content)
    foreign_only = world.honest[3]
    document["jobs"] = [j for j in document["jobs"] if j["job_id"] == foreign_only]
    report = AuditReport(epochs=[1])
    summary = Replayer(_fetch_inputs(env), MODELS).replay(report, {1: document}, 5, seed=2)
    assert (summary.accepted, summary.comparable, summary.jobs) == (1, 0, [])
    assert [(f["check"], f["epoch"]) for f in report.faults] == [("replay_coverage", 1)]
    assert not report.ok
    report = AuditReport(epochs=[1])  # no replay asked for: no coverage to check
    Replayer(_fetch_inputs(env), MODELS).replay(report, {1: document}, 0, seed=2)
    assert report.faults == [] and report.checks["replay_coverage"] == 0  # nothing asked


@pytest.mark.chain
def test_inputs_route_serves_posted_jobs_only(world: World) -> None:
    """The inputs of a job of a posted epoch, as stored; 404 for another epoch's job, an
    unknown job or an epoch not posted."""
    http, job_id = world.env.http, world.honest[0]
    r = http.get(f"/v1/epochs/1/jobs/{job_id.upper().replace('0X', '0x')}/inputs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["epoch"], body["job_id"]) == (1, job_id)
    with session_scope(world.env.ctx.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and body["inputs"] == json.loads(job.inputs_json)
        assert body["input_hash"] == job.input_hash and body["model_hash"] == job.model_hash
        assert session.exec(select(Job).where(Job.epoch == 1)).all()
    for path in (
        f"/v1/epochs/2/jobs/{job_id}/inputs",
        f"/v1/epochs/1/jobs/0x{'ab' * 32}/inputs",
        f"/v1/epochs/3/jobs/{job_id}/inputs",
    ):
        r = http.get(path)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.text)


def _cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    deployment = world.env.ctx.settings.deployment_file
    return subprocess.run(
        [sys.executable, "-m", "inferledger.cli", "audit", "--rpc-url"]
        + [world.env.ctx.settings.rpc_url, "--deployment-file", str(deployment), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.chain
def test_replay_cli_exit_codes_and_json(world: World, tmp_path: Path) -> None:
    """``inferledger audit --replay`` as an auditor runs it against the API over HTTP: exit 0
    with the seed printed on the honest epoch, 1 with the replay in the JSON on the
    colluded one, 2 when there is no API to fetch inputs from."""
    honest = _cli(
        world, "--api-url", world.url, "--epoch", "1", "--replay", "5", "--replay-seed", "11"
    )
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert "replay: 3 of 3 comparable jobs (4 accepted), seed 11" in honest.stdout
    assert "1 accepted jobs cannot be compared here" in honest.stdout
    assert "replayed 3 jobs: 3 agree, 0 do not" in honest.stdout
    assert "audit passed" in honest.stdout and "FAULT" not in honest.stdout
    cheat = _cli(world, "--api-url", world.url, "--replay", "9", "--json")
    assert cheat.returncode == 1, cheat.stdout + cheat.stderr
    report = json.loads(cheat.stdout)
    assert {f["check"] for f in report["faults"]} == {"replay_mismatch"}
    replay = report["replay"]
    assert (replay["requested"], replay["accepted"], replay["comparable"]) == (9, 6, 5)
    assert isinstance(replay["seed"], int) and len(replay["jobs"]) == 5
    assert sum(j["outcome"] == "mismatch" for j in replay["jobs"]) == 2
    files = tmp_path / "files"
    files.mkdir()
    no_api = _cli(world, "--files", str(files), "--replay", "1")
    assert no_api.returncode == 2 and "--api-url" in no_api.stdout
