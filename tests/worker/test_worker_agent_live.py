"""The agent against the real API over HTTP (uvicorn), on real contracts and a real database:
paid jobs answered and accepted by consensus, earnings seen, a graceful stop that hands back
what has not started, jobs of a model the device lacks handed on, an API that goes away and
comes back, and an inference process that dies."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from running_agent import Running
from tiny_model import build_tiny_model
from worker_live_api import (
    LiveApi,
    api_env_for_agents,
    own_celery_queue,
    samples,
    wait_for,
    write_key_file,
)

from ledger.models import AssignmentStatus, JobStatus
from worker.agent import MAX_CHUNK
from worker.api_client import ApiClient
from worker.config import WorkerSettings

QUEUE_PREFIX = "inferledger-worker-tests-"


@pytest.fixture(scope="module", autouse=True)
def celery_queue(redis_url: str) -> Iterator[str]:
    with own_celery_queue(redis_url, QUEUE_PREFIX) as queue:
        yield queue


@pytest.fixture
def live(chain: Any, tmp_path: Path) -> Iterator[LiveApi]:
    with api_env_for_agents(chain, tmp_path / "api") as env:
        api = LiveApi(env).start()
        try:
            yield api
        finally:
            api.stop()


def _settings(live: LiveApi, index: int, models_dir: Path, tmp_path: Path, **extra: Any) -> Any:
    c = live.env.contributors[index]
    values: dict[str, Any] = {
        "api_url": live.url,
        "key_file": write_key_file(c, tmp_path),
        "models_dir": models_dir,
        "workers": 1,
        "poll_interval_s": 0.01,
        "max_idle_sleep_s": 0.05,
        "backoff_initial_s": 0.02,
        "max_backoff_s": 0.2,
        "heartbeat_interval_s": 0.2,
        "earnings_interval_s": 0.2,
        "request_timeout_s": 10,
        "shutdown_grace_s": 10,
    }
    return WorkerSettings(**{**values, **extra})


def _start(live: LiveApi, index: int, settings: WorkerSettings, **kwargs: Any) -> Running:
    return Running(settings, live.env.contributors[index].device, **kwargs)


def _submitted_by(live: LiveApi, job_ids: list[str], worker: str) -> set[str]:
    return {
        a.job_id
        for a in live.assignments(job_ids)
        if a.worker == worker and a.status == AssignmentStatus.SUBMITTED
    }


def test_agents_answer_paid_jobs_and_see_their_pending_earnings(
    live: LiveApi, models_dir: Path, tmp_path: Path
) -> None:
    env = live.env
    agents = [
        _start(live, i, _settings(live, i, models_dir, tmp_path, workers=2 if i == 0 else 1))
        for i in range(3)
    ]
    jobs = [env.submit_job(samples(1 + i % 4, start=i))["job_id"] for i in range(12)]
    wait_for("every job answered", lambda: _all_submitted(live, jobs), agents=agents)
    assert env.reconcile().accepted == len(jobs)
    earned = {c.worker: int(_earnings(env, c)["pending_wei"]) for c in env.contributors}
    for running, c in zip(agents, env.contributors, strict=True):
        wait_for("earnings seen", lambda r=running, c=c: r.stats.pending_wei == earned[c.worker])
    stats = [running.stop() for running in agents]
    for s, c in zip(stats, env.contributors, strict=True):
        mine = _submitted_by(live, jobs, c.worker)
        assert s.done == s.pulled == len(mine) > 0
        assert (s.errors, s.refused, s.handed_back, s.held) == (0, 0, 0, 0)
        assert s.eligible is True and s.signed == len(mine)
        assert earned[c.worker] > 0
    assert stats[0].workers == 2
    assert sum(s.done for s in stats) == 2 * len(jobs)  # two replicas each
    assert all(live.faults(c) == (0, 0) for c in env.contributors)


def _earnings(env: Any, c: Any) -> dict[str, Any]:
    r = env.http.get("/v1/work/earnings", headers=c.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


class StopAfterPull(ApiClient):
    """The real client; the stop arrives the moment the first pull with work returns."""

    def __init__(self, *args: Any, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop

    def pull(self, max_items: int, cancel: Any = None, wait_s: float = 0.0) -> list[Any]:
        assignments = super().pull(max_items, cancel, wait_s)
        if assignments:
            self.stop.set()
        return assignments


def test_stop_hands_back_jobs_not_started_and_submits_the_rest(
    live: LiveApi, models_dir: Path, tmp_path: Path
) -> None:
    env = live.env
    c = env.contributors[0]
    env.fund_and_deposit(env.client_key, 2 * 10**18)  # 3,000 rows in all
    jobs = [env.submit_job(samples(32, start=i))["job_id"] for i in range(48)]
    mine = {a.job_id for a in live.assignments(jobs) if a.worker == c.worker}
    assert len(mine) > MAX_CHUNK  # more than one chunk: one runs, the rest waits
    settings = _settings(live, 0, models_dir, tmp_path, pull_batch=64, max_held=64)
    stop = threading.Event()
    client = StopAfterPull(settings, c.device, stop=stop)
    running = _start(live, 0, settings, client=client, event=stop)
    running.thread.join(timeout=60)
    stats = running.stop()
    rows = [a for a in live.assignments(jobs) if a.worker == c.worker]
    expired = {a.job_id for a in rows if a.status == AssignmentStatus.EXPIRED}
    submitted = {a.job_id for a in rows if a.status == AssignmentStatus.SUBMITTED}
    assert expired | submitted == mine  # nothing left held
    assert len(submitted) == MAX_CHUNK == stats.done  # the running chunk finished
    assert stats.handed_back == len(expired) == len(mine) - MAX_CHUNK
    assert stats.pulled == len(mine) and stats.errors == 0
    assert live.faults(c) == (0, 0)  # handing back is no liveness fault
    for job_id in expired:  # each went at once to the contributor not yet on it
        live_rows = [a for a in live.assignments([job_id]) if a.status != AssignmentStatus.EXPIRED]
        assert len({a.contributor for a in live_rows}) == 2
        assert c.address not in {a.contributor for a in live_rows}


def test_jobs_of_a_model_the_device_lacks_are_handed_on(live: LiveApi, tmp_path: Path) -> None:
    env = live.env
    other_models = tmp_path / "other-models"
    build_tiny_model(other_models / "tiny-digits")
    jobs = [env.submit_job(samples(2, start=i))["job_id"] for i in range(6)]
    c = env.contributors[1]
    mine = {a.job_id for a in live.assignments(jobs) if a.worker == c.worker}
    running = _start(live, 1, _settings(live, 1, other_models, tmp_path))
    wait_for(
        "every job handed back",
        lambda: running.stats.handed_back == len(mine),
        agents=[running],
    )
    stats = running.stop()
    assert (stats.done, stats.errors, stats.pulled) == (0, len(mine), len(mine))
    rows = [a for a in live.assignments(jobs) if a.worker == c.worker]
    assert {a.status for a in rows} <= {AssignmentStatus.EXPIRED}
    assert live.faults(c) == (0, 0)
    statuses = live.job_statuses(jobs)
    assert set(statuses.values()) == {JobStatus.PENDING}  # reassigned, not failed


def test_agent_rides_out_the_api_going_away(
    live: LiveApi, models_dir: Path, tmp_path: Path
) -> None:
    env = live.env
    agents = [_start(live, i, _settings(live, i, models_dir, tmp_path)) for i in range(3)]
    first = [env.submit_job(samples(1, start=i))["job_id"] for i in range(3)]
    wait_for("the first jobs answered", lambda: _all_submitted(live, first), agents=agents)
    failed = [r.client.failed_attempts for r in agents]
    live.stop()  # the API goes away; jobs still arrive (the harness talks to the app directly)
    later = [env.submit_job(samples(2, start=i))["job_id"] for i in range(3)]
    wait_for(
        "every agent retrying",
        lambda: all(r.client.failed_attempts > n for r, n in zip(agents, failed, strict=True)),
    )
    assert not _all_submitted(live, later)
    live.start()
    wait_for("the later jobs answered", lambda: _all_submitted(live, later), agents=agents)
    stats = [running.stop() for running in agents]
    assert sum(s.done for s in stats) == 2 * (len(first) + len(later))
    assert sum(s.errors for s in stats) == 0


def _all_submitted(live: LiveApi, job_ids: list[str]) -> bool:
    return set(live.job_statuses(job_ids).values()) == {JobStatus.SUBMITTED}


def test_a_dead_inference_process_loses_only_its_jobs(
    live: LiveApi, models_dir: Path, tmp_path: Path
) -> None:
    env = live.env
    c = env.contributors[2]
    running = _start(live, 2, _settings(live, 2, models_dir, tmp_path, workers=2))
    first = [env.submit_job(samples(64, start=i))["job_id"] for i in range(8)]
    wait_for("work held", lambda: running.stats.held > 0 or running.stats.done > 0)
    victims = running.agent.pool_pids()
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)  # as the OOM killer would, busy or idle
    later = [env.submit_job(samples(8, start=i))["job_id"] for i in range(4)]
    jobs = first + later
    mine = {a.job_id for a in live.assignments(jobs) if a.worker == c.worker}
    wait_for(
        "every job answered or handed back",
        lambda: _submitted_by(live, jobs, c.worker) | _expired_of(live, jobs, c.worker) == mine,
        agents=[running],
    )
    wait_for(
        "a new pool",
        lambda: set(running.agent.pool_pids()).isdisjoint(victims),
        agents=[running],
    )
    stats = running.stop()
    assert stats.done + stats.handed_back == stats.pulled == len(mine)
    assert stats.errors == stats.handed_back  # each lost job counted once, none run twice
    assert _submitted_by(live, later, c.worker) == {j for j in later if j in mine}
    assert live.faults(c) == (0, 0)


def _expired_of(live: LiveApi, jobs: list[str], worker: str) -> set[str]:
    return {
        a.job_id
        for a in live.assignments(jobs)
        if a.worker == worker and a.status == AssignmentStatus.EXPIRED
    }


class CountingPulls(ApiClient):
    """The real client, noting each pull: when it began, and (wait asked, seconds it took,
    assignments) when it ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[float] = []
        self.pulls: list[tuple[float, float, int]] = []
        self.submitted: list[float] = []

    def pull(self, max_items: int, cancel: Any = None, wait_s: float = 0.0) -> list[Any]:
        self.started.append(start := time.monotonic())
        assignments = super().pull(max_items, cancel, wait_s)
        self.pulls.append((wait_s, time.monotonic() - start, len(assignments)))
        return assignments

    def submit(self, results: list[dict[str, Any]], cancel: Any = None) -> Any:
        statuses = super().submit(results, cancel)
        self.submitted.append(time.monotonic())
        return statuses

    def submit_and_pull(
        self, results: list[dict[str, Any]], max_items: int, wait_s: float = 0.0, cancel: Any = None
    ) -> Any:
        """A submission that is also the next pull: noted as both, the pull once it ends."""
        self.submitted.append(start := time.monotonic())
        self.started.append(start)
        statuses, pulled = super().submit_and_pull(results, max_items, wait_s, cancel)
        self.pulls.append((wait_s, time.monotonic() - start, len(pulled or [])))
        return statuses, pulled


def test_an_idle_agent_waits_at_the_api_and_is_woken_by_work(
    live: LiveApi, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle, the agent's pull waits at the API (``long_poll_s``) instead of asking every few
    ms; a job assigned to it is taken at once, by the wake-up: the API's fallback read is
    set to 30 s, so only the wake-up can answer the waiting pull with the job. The API had
    no more, so the agent does not ask again while it runs the job (the answer would only
    deliver the job again); once the result is in, it waits for work again at once, not
    after an idle pause (set to 2 s here)."""
    from ledger import notify

    monkeypatch.setattr(notify, "FALLBACK_S", 30.0)
    env = live.env
    settings = _settings(
        live,
        0,
        models_dir,
        tmp_path,
        long_poll_s=6,
        heartbeat_interval_s=60,
        poll_interval_s=2,
        max_idle_sleep_s=2,
    )
    client = CountingPulls(settings, env.contributors[0].device)
    running = _start(live, 0, settings, client=client)
    try:
        time.sleep(2)
        assert len(client.started) == 1 and client.pulls == []  # one pull, waiting
        while True:  # a job for contributor 0 (replicas go to two of the three)
            job_id = env.submit_job(samples(1, start=len(client.started)))["job_id"]
            if env.contributors[0] in env.assigned(job_id):
                break
        submitted = time.monotonic()
        wait_for(
            "the job's result", lambda: _submitted_by(live, [job_id], env.contributors[0].worker)
        )
        assert time.monotonic() - submitted < 3.0
        assert client.pulls[0][0] >= 5 and client.pulls[0][2] == 1  # the waiting pull got it
        wait_for("the next pull", lambda: client.submitted and len(client.started) >= 2)
        # the result went with the next pull, in one exchange, which waits at the API for
        # work (no idle pause after the work)
        assert client.started[1] == client.submitted[0]
        assert [p[2] for p in client.pulls] == [1]  # the job was not delivered twice
        time.sleep(1)
        assert len(client.pulls) == 1  # the combined pull is still waiting (long_poll_s 6)
    finally:
        running.stop()
