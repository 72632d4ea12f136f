"""A worker's hand-backs, heartbeats and pending earnings over the API: only the worker's own
assignments go back (to another contributor's worker, with no fault), a heartbeat keeps it
seen, and its earnings count only its own votes until an epoch is posted."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import ApiEnv, Contributor, samples

from protocol.pricing import split


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _release(env: ApiEnv, c: Contributor, body: Any) -> Any:
    return env.http.post("/v1/work/release", json=body, headers=c.headers)


def _device(env: ApiEnv, c: Contributor) -> dict[str, Any]:
    (device,) = env.http.get(f"/v1/contributors/{c.address}/devices").json()
    return dict(device)


def test_release_hands_back_to_another_contributor_without_a_fault(ready: ApiEnv) -> None:
    env = ready
    job = env.submit_job(samples(1))
    first, second = env.assigned(job["job_id"])
    (third,) = [c for c in env.contributors if c not in (first, second)]
    assert job["job_id"] in [a["job_id"] for a in env.pull(first)]
    r = _release(env, third, {"job_ids": [job["job_id"]], "reason": "not mine"})
    assert r.status_code == 200 and r.json() == {"released": []}  # not its job
    r = _release(env, first, {"job_ids": [job["job_id"]], "reason": "stopping"})
    assert r.status_code == 200 and r.json() == {"released": [job["job_id"]]}
    assert {c.worker for c in env.assigned(job["job_id"])} >= {second.worker, third.worker}
    assert job["job_id"] not in [a["job_id"] for a in env.pull(first)]
    assert job["job_id"] in [a["job_id"] for a in env.pull(third)]
    assert _device(env, first)["liveness_faults"] == 0
    r = _release(env, first, {"job_ids": [job["job_id"]]})
    assert r.json() == {"released": []}  # once only


def test_release_refuses_malformed_or_oversized_bodies(ready: ApiEnv) -> None:
    env = ready
    c = env.contributors[0]
    for body in ({}, {"job_ids": "0x12"}, {"job_ids": ["0x12"]}, {"job_ids": [7]}):
        r = _release(env, c, body)
        assert r.status_code == 422 and r.json()["error"] == "invalid_body", body
    many = ["0x" + f"{i:064x}" for i in range(env.ctx.settings.submit_batch_max + 1)]
    r = _release(env, c, {"job_ids": many})
    assert r.status_code == 400 and r.json()["error"] == "batch_too_large"
    r = env.http.post("/v1/work/release", json={"job_ids": []})
    assert r.status_code == 401


def test_heartbeat_keeps_the_worker_seen_and_reports_its_state(ready: ApiEnv) -> None:
    env = ready
    job = env.submit_job(samples(1))
    held = env.assigned(job["job_id"])[0]
    assert env.http.post("/v1/work/heartbeat").status_code == 401
    r = env.http.post("/v1/work/heartbeat", headers=held.headers)
    assert r.status_code == 200, r.text
    beat = r.json()
    assert beat["worker"] == held.worker and beat["contributor"] == held.address
    assert beat["eligible"] is True and beat["in_flight"] >= 1
    assert beat["seen_s"] == env.ctx.settings.worker_seen_s
    assert _device(env, held)["last_seen_s_ago"] < 5


def test_earnings_count_the_workers_own_pay_until_posted(ready: ApiEnv) -> None:
    env = ready
    before = {c.worker: _earnings(env, c) for c in env.contributors}
    job = env.run_job(samples(2))
    voters = {c.worker for c in env.assigned(job["job_id"])}
    shares, _ = split(
        int(job["price_wei"]),
        env.ctx.settings.fee_bps,
        sorted(c.address for c in env.contributors if c.worker in voters),
    )
    for c in env.contributors:
        now = _earnings(env, c)
        assert now["worker"] == c.worker and now["contributor"] == c.address
        assert now["posted_epoch"] == 0
        gained = int(now["pending_wei"]) - int(before[c.worker]["pending_wei"])
        assert gained == (shares[c.address] if c.worker in voters else 0)
        assert now["pending_jobs"] - before[c.worker]["pending_jobs"] == (c.worker in voters)
    assert env.http.get("/v1/work/earnings").status_code == 401


def _earnings(env: ApiEnv, c: Contributor) -> dict[str, Any]:
    r = env.http.get("/v1/work/earnings", headers=c.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())
