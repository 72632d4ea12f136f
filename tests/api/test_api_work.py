"""Workers pull their own assignments and submit attested results; each wrong submission is
refused with a code and changes nothing; two agreeing replicas make an accepted job whose
attestations recover to the workers that signed them."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from api_harness import ApiEnv, Contributor, malformed_items, samples, wire
from eth_account import Account
from fastapi.testclient import TestClient
from sqlmodel import select

from ledger.db import session_scope
from ledger.models import Assignment, AssignmentStatus
from protocol import hashing, tensors
from protocol.eip712 import Attestation, recover_attestation
from protocol.fingerprint import Fingerprint


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _split(env: ApiEnv, job_id: str) -> tuple[list[Contributor], list[Contributor]]:
    assigned = env.assigned(job_id)
    return assigned, [c for c in env.contributors if c not in assigned]


def _mine(env: ApiEnv, c: Contributor, job_id: str) -> dict[str, Any]:
    (found,) = [a for a in env.pull(c) if a["job_id"] == job_id]
    return found


def _assignment_rows(env: ApiEnv, job_id: str) -> list[tuple[str, str, str | None]]:
    with session_scope(env.ctx.engine) as session:
        rows = session.exec(
            select(Assignment).where(Assignment.job_id == job_id).order_by(Assignment.worker)
        ).all()
        return [(a.worker, a.status, a.result_hash) for a in rows]


def _one(env: ApiEnv, c: Contributor, item: Any) -> dict[str, Any]:
    (result,) = env.post_results(c, [item])
    return result


def test_workers_pull_only_their_own_assignments(ready: ApiEnv) -> None:
    env = ready
    job = env.submit_job(samples(2))
    assigned, others = _split(env, job["job_id"])
    assert len(assigned) == 2 and len(others) == 1
    assert len({c.address for c in assigned}) == 2  # replicas under distinct contributors
    for c in assigned:
        got = _mine(env, c, job["job_id"])
        assert got["model_hash"] == env.model_hash
        assert got["input_hash"] == job["input_hash"]
        decoded = {k: tensors.decode(v, max_bytes=1 << 20) for k, v in got["inputs"].items()}
        assert np.array_equal(decoded["input"], samples(2)["input"])
        assert "0x" + hashing.input_hash(decoded).hex() == job["input_hash"]
        assert got["deadline"] > 0
        # re-delivered until answered
        assert job["job_id"] in [a["job_id"] for a in env.pull(c)]
    assert job["job_id"] not in [a["job_id"] for a in env.pull(others[0])]


def test_pull_limits_the_batch(ready: ApiEnv) -> None:
    env = ready
    c = env.contributors[0]
    r = env.http.get("/v1/work", params={"max": 0}, headers=c.headers)
    assert r.status_code == 422 and r.json()["error"] == "invalid_body"
    r = env.http.get("/v1/work", params={"max": "many"}, headers=c.headers)
    assert r.status_code == 422 and r.json()["error"] == "invalid_body"
    r = env.http.get("/v1/work", params={"max": 1}, headers=c.headers)
    assert r.status_code == 200 and len(r.json()["assignments"]) <= 1


def test_submissions_are_checked_then_two_replicas_make_an_accepted_job(ready: ApiEnv) -> None:
    env = ready
    inputs = samples(4, start=50)
    job = env.submit_job(inputs)
    jid = job["job_id"]
    (first, second), (outsider,) = _split(env, jid)
    a1, a2 = _mine(env, first, jid), _mine(env, second, jid)
    outputs = env.model.run(inputs)
    pristine = _assignment_rows(env, jid)

    # not assigned to the outsider, even with a correct, self-signed attestation
    r = _one(env, outsider, env.result_item(a1, outsider.device))
    assert (r["status"], r["error"]) == ("refused", "not_assigned")
    # a job that does not exist at all
    ghost = dict(env.result_item(a1, first.device), job_id="0x" + "ab" * 32)
    r = _one(env, first, ghost)
    assert (r["status"], r["error"]) == ("refused", "not_assigned")

    # a result hash that does not commit to the outputs (signed correctly over it)
    tampered = {"logits": outputs["logits"] + np.float32(1.0)}
    wrong_hash = hashing.result_hash(env.manifest.model_hash, inputs, tampered)
    r = _one(env, first, env.result_item(a1, first.device, outputs=outputs, result_hash=wrong_hash))
    assert (r["status"], r["error"]) == ("refused", "result_hash_mismatch")
    # outputs changed after hashing: the hash no longer commits to them
    item = env.result_item(a1, first.device)
    item["outputs"] = wire(tampered)
    r = _one(env, first, item)
    assert (r["status"], r["error"]) == ("refused", "result_hash_mismatch")

    # an attestation signed by another key: another registered worker, or nobody's
    for signer in (second.device, outsider.device, Account.create()):
        r = _one(env, first, env.result_item(a1, signer))
        assert (r["status"], r["error"]) == ("refused", "bad_signature"), signer.address
    # the fingerprint is part of what is signed
    item = env.result_item(a1, first.device)
    item["fingerprint"]["threads"] = 2
    r = _one(env, first, item)
    assert (r["status"], r["error"]) == ("refused", "bad_signature")

    assert _assignment_rows(env, jid) == pristine  # nothing of the refusals was recorded
    assert env.http.get(f"/v1/jobs/{jid}").json()["status"] == "pending"

    # the first replica answers; another answer of it is refused, the very same one (a
    # retry after a lost response) is acknowledged as a duplicate; neither changes anything
    good1 = env.result_item(a1, first.device)
    r = _one(env, first, good1)
    assert r == {"job_id": jid, "status": "accepted", "error": None, "detail": ""}
    recorded = _assignment_rows(env, jid)
    r = _one(env, first, env.result_item(a1, first.device, outputs=tampered))
    assert (r["status"], r["error"]) == ("refused", "already_submitted")
    r = _one(env, first, good1)
    assert r == {"job_id": jid, "status": "accepted", "error": None, "detail": "duplicate"}
    assert _assignment_rows(env, jid) == recorded
    assert jid not in [a["job_id"] for a in env.pull(first)]  # answered: no longer delivered
    assert env.http.get(f"/v1/jobs/{jid}").json()["status"] == "pending"

    # the second replica answers (its assignment was re-delivered until now)
    assert _mine(env, second, jid)["job_id"] == jid
    r = _one(env, second, env.result_item(a2, second.device))
    assert r["status"] == "accepted", r
    assert env.http.get(f"/v1/jobs/{jid}").json()["status"] == "submitted"
    r = _one(env, second, env.result_item(a2, second.device, outputs=tampered))
    assert (r["status"], r["error"]) == ("refused", "already_submitted")

    report = env.reconcile()
    assert report.accepted == 1 and jid in report.job_ids
    got = env.http.get(f"/v1/jobs/{jid}", params={"wait_s": 5})
    assert got.status_code == 200, got.text
    done = got.json()
    assert done["status"] == "accepted"
    assert done["failure"] is None
    out = {k: tensors.decode(v, max_bytes=1 << 20) for k, v in done["outputs"].items()}
    assert np.array_equal(out["logits"], outputs["logits"])
    assert (
        done["result_hash"]
        == "0x" + hashing.result_hash(env.manifest.model_hash, inputs, outputs).hex()
    )
    assert done["fingerprint"] == "0x" + env.model.fingerprint.digest().hex()

    votes = done["attestations"]
    assert len(votes) == 2
    assert {v["worker"] for v in votes} == {first.worker, second.worker}
    assert {v["contributor"] for v in votes} == {first.address, second.address}
    for v in votes:
        fingerprint = Fingerprint.from_dict(v["fingerprint_info"])
        assert v["fingerprint"] == "0x" + fingerprint.digest().hex()
        att = Attestation(
            bytes.fromhex(jid[2:]),
            env.manifest.model_hash,
            bytes.fromhex(done["input_hash"][2:]),
            bytes.fromhex(v["result_hash"][2:]),
            fingerprint.digest(),
        )
        signer = recover_attestation(
            env.deployment.registry_domain, att, bytes.fromhex(v["signature"][2:])
        )
        assert signer == v["worker"]

    # paid: the client is charged the price and holds nothing for this job
    balance = env.balance()
    assert int(balance["charged_wei"]) >= int(done["price_wei"])
    # a decided job refuses other answers; a retry of the recorded one stays a no-op
    decided = _assignment_rows(env, jid)
    r = _one(env, first, env.result_item(a1, first.device, outputs=tampered))
    assert (r["status"], r["error"]) == ("refused", "already_submitted")
    assert _one(env, first, good1)["detail"] == "duplicate"
    assert _assignment_rows(env, jid) == decided
    assert env.reconcile().accepted == 0  # reconciling again changes nothing
    assert env.http.get(f"/v1/jobs/{jid}").json() == done


def test_malformed_submissions_are_refused_item_by_item(ready: ApiEnv) -> None:
    env = ready
    inputs = samples(4, start=80)
    job = env.submit_job(inputs)
    jid = job["job_id"]
    (first, _second), _ = _split(env, jid)
    good = env.result_item(_mine(env, first, jid), first.device)
    pristine = _assignment_rows(env, jid)
    cases = malformed_items(good)
    results = env.post_results(first, [item for _, item in cases])
    assert len(results) == len(cases)
    for (name, _), result in zip(cases, results, strict=True):
        assert result["status"] == "refused", (name, result)
        assert isinstance(result["error"], str) and result["error"], (name, result)
    assert _assignment_rows(env, jid) == pristine
    # one at a time too, each refused the same way
    for name, item in cases:
        r = _one(env, first, item)
        assert r["status"] == "refused", (name, r)
    # a batch mixing refusals and a good item records the good one only
    results = env.post_results(first, [cases[0][1], good, cases[-1][1]])
    assert [r["status"] for r in results] == ["refused", "accepted", "refused"]
    assert [row[1] for row in _assignment_rows(env, jid) if row[0] == first.worker] == [
        AssignmentStatus.SUBMITTED
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"results": [1, 2]},
        {"results": ["x"]},
        {"results": [None]},
        {"results": {"job_id": "0x"}},
        {"results": "nope"},
        {},
        [],
    ],
    ids=["numbers", "text", "null", "object", "string", "empty", "list"],
)
def test_a_malformed_batch_is_invalid_body(ready: ApiEnv, body: Any) -> None:
    c = ready.contributors[0]
    r = ready.http.post("/v1/work/results", json=body, headers=c.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_body"


def test_a_batch_beyond_the_limit_is_refused(ready: ApiEnv) -> None:
    c = ready.contributors[0]
    n = ready.ctx.settings.submit_batch_max + 1
    r = ready.http.post("/v1/work/results", json={"results": [{}] * n}, headers=c.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "batch_too_large"


def test_an_empty_batch_is_fine(ready: ApiEnv) -> None:
    assert ready.post_results(ready.contributors[0], []) == []


def test_the_fingerprint_info_is_what_was_signed(ready: ApiEnv) -> None:
    env = ready
    env.run_job(samples(1, start=99))
    with session_scope(env.ctx.engine) as session:
        rows = session.exec(
            select(Assignment).where(Assignment.status == AssignmentStatus.SUBMITTED)
        ).all()
        for a in rows:
            assert a.fingerprint_json is not None
            info = json.loads(a.fingerprint_json)
            assert a.fingerprint == "0x" + Fingerprint.from_dict(info).digest().hex()


def test_contributor_devices_show_eligibility_presence_and_work_in_flight(ready: ApiEnv) -> None:
    env = ready
    job = env.submit_job(samples(1))
    assigned = {c.worker for c in env.assigned(job["job_id"])}
    for c in env.contributors:
        r = env.http.get(f"/v1/contributors/{c.address.lower()}/devices")
        assert r.status_code == 200
        (device,) = r.json()
        assert device["address"] == c.worker
        assert device["eligible"] is True and device["online"] is True
        assert device["last_seen_s_ago"] is not None and device["last_seen_s_ago"] >= 0
        assert device["in_flight"] >= (1 if c.worker in assigned else 0)
        assert device["safety_faults"] == 0
    stranger = Account.create().address
    assert env.http.get(f"/v1/contributors/{stranger}/devices").json() == []
    r = env.http.get("/v1/contributors/not-an-address/devices")
    assert r.status_code == 400 and r.json()["error"] == "invalid_address"


def test_a_submission_may_carry_the_next_pull(ready: ApiEnv) -> None:
    """``POST /v1/work/results?max=`` answers the results and, once they are committed, the
    worker's next assignments, as ``GET /v1/work`` would; with ``wait_s`` and nothing to
    deliver it waits, then answers none. Without ``max`` the answer has no assignments."""
    env = ready
    first = env.submit_job(samples(1, start=70))
    c = env.assigned(first["job_id"])[0]
    env.submit_job(samples(1, start=71))  # more work, perhaps for the same worker
    mine = _mine(env, c, first["job_id"])
    r = env.http.post(
        "/v1/work/results",
        params={"max": 16},
        json={"results": [env.result_item(mine, c.device)]},
        headers=c.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(x["job_id"], x["status"]) for x in body["results"]] == [(first["job_id"], "accepted")]
    delivered = {a["job_id"] for a in body["assignments"]}
    assert first["job_id"] not in delivered  # answered: not delivered again
    assert delivered == {a["job_id"] for a in env.pull(c)}  # the rest, as a pull sees it

    items = [env.result_item(a, c.device) for a in env.pull(c)]  # everything it holds
    started = time.monotonic()
    r = env.http.post(
        "/v1/work/results",
        params={"max": 4, "wait_s": 0.3},
        json={"results": items},
        headers=c.headers,
    )
    assert r.status_code == 200, r.text
    assert time.monotonic() - started >= 0.3  # nothing left to deliver: it waited
    assert r.json()["assignments"] == []
    assert all(x["status"] == "accepted" for x in r.json()["results"])
    r = env.http.post("/v1/work/results", json={"results": []}, headers=c.headers)
    assert r.json() == {"results": []}
    r = env.http.post(
        "/v1/work/results", params={"max": -1}, json={"results": []}, headers=c.headers
    )
    assert r.status_code == 422 and r.json()["error"] == "invalid_body"


# --- the lean routes (api.routes.workers.lean_work_routes) answer as FastAPI's would ------


def _same(ready: ApiEnv, fastapi_only: TestClient, method: str, url: str, **kw: Any) -> Any:
    """The lean route's answer, after checking FastAPI's route gives the same one."""
    lean = ready.http.request(method, url, **kw)
    plain = fastapi_only.request(method, url, **kw)
    assert (lean.status_code, lean.json()) == (plain.status_code, plain.json()), lean.text
    assert lean.headers["content-type"] == plain.headers["content-type"]
    return lean


def test_the_lean_worker_routes_are_the_ones_answering(
    ready: ApiEnv, fastapi_only: TestClient
) -> None:
    lean = [getattr(r, "name", "") for r in ready.http.app.router.routes[:3]]  # type: ignore[attr-defined]
    assert lean == ["submit_job_lean", "get_work_lean", "post_results_lean"]
    assert not {"get_work_lean", "post_results_lean"} & {
        getattr(r, "name", "")
        for r in fastapi_only.app.routes  # type: ignore[attr-defined]
    }
    paths = ready.http.get("/openapi.json").json()["paths"]
    assert "get" in paths["/v1/work"] and "post" in paths["/v1/work/results"]


@pytest.mark.parametrize(
    "query", ["max=0", "max=abc", "max=1.5", "max=-2", "max=+3", "max=%203", "wait_s=-1",
              "wait_s=61", "wait_s=nan", "wait_s=soon", "max=2&wait_s=0.01", ""],
)  # fmt: skip
def test_a_pull_is_answered_by_the_lean_route_as_by_fastapi(
    ready: ApiEnv, fastapi_only: TestClient, query: str
) -> None:
    c = ready.contributors[0]
    r = _same(ready, fastapi_only, "GET", f"/v1/work?{query}", headers=c.headers)
    assert r.status_code in (200, 422)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": c.token}):
        r = _same(ready, fastapi_only, "GET", f"/v1/work?{query}", headers=headers)
        assert r.status_code in (401, 422), r.text


def test_a_pull_delivers_the_same_assignments_on_either_route(
    ready: ApiEnv, fastapi_only: TestClient
) -> None:
    env = ready
    job = env.submit_job(samples(1, start=21))
    c = env.assigned(job["job_id"])[0]
    r = _same(env, fastapi_only, "GET", "/v1/work?max=64", headers=c.headers)
    assert job["job_id"] in {a["job_id"] for a in r.json()["assignments"]}


@pytest.mark.parametrize(
    "content, headers",
    [
        (b"{not json", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b"[]", {"content-type": "application/json"}),
        (b'{"results": 3}', {"content-type": "application/json"}),
        (b'{"results": []}', {"content-type": "text/plain"}),
        (b'{"results": []}', {}),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}),
    ],
)
def test_a_bad_submission_is_refused_by_the_lean_route_as_by_fastapi(
    ready: ApiEnv, fastapi_only: TestClient, content: bytes, headers: dict[str, str]
) -> None:
    c = ready.contributors[0]
    for auth in (c.headers, {}):
        r = _same(
            ready, fastapi_only, "POST", "/v1/work/results", content=content,
            headers={**headers, **auth},
        )  # fmt: skip
        assert r.status_code in (400, 401, 422), r.text


def test_a_submission_is_taken_by_the_lean_route_as_by_fastapi(
    ready: ApiEnv, fastapi_only: TestClient
) -> None:
    env = ready
    c = env.contributors[0]
    too_many = {"results": [{}] * (env.ctx.settings.submit_batch_max + 1)}
    r = _same(env, fastapi_only, "POST", "/v1/work/results", json=too_many, headers=c.headers)
    assert r.json()["error"] == "batch_too_large"
    for query in ("max=-1", "wait_s=99", "max=x"):
        r = _same(env, fastapi_only, "POST", f"/v1/work/results?{query}", json={"results": []},
                  headers=c.headers)  # fmt: skip
        assert r.status_code == 422
    r = _same(env, fastapi_only, "POST", "/v1/work/results", json={"results": []})
    assert r.status_code == 401
    job = env.submit_job(samples(1, start=22))
    c = env.assigned(job["job_id"])[0]
    item = env.result_item(_mine(env, c, job["job_id"]), c.device)
    first = env.http.post("/v1/work/results", json={"results": [item]}, headers=c.headers)
    assert first.status_code == 200 and first.json()["results"][0]["status"] == "accepted"
    again = _same(env, fastapi_only, "POST", "/v1/work/results", json={"results": [item]},
                  headers=c.headers)  # fmt: skip
    assert again.json()["results"][0]["job_id"] == job["job_id"]
