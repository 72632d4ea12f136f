"""The submission that stores a job's last vote decides the job in the same unit of work
(``ledger.reconcile.decide_now``), and a client may wait for the decision in its ``POST``:
the two steps that took a request's latency from 42 to under 30 ms (docs/performance.md).
What the Celery reconciler decided before, the request now decides the same way; where it
cannot, nothing of the submission is lost and the reconciler decides."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from api_harness import ApiEnv, samples
from sqlmodel import select

from ledger import invariants, journal, reconcile
from ledger.db import session_scope
from ledger.invariants import InvariantViolation
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus

API_SETTINGS = {"reconcile_inline_max": 8}


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _answer_all(env: ApiEnv, job_id: str) -> list[dict[str, Any]]:
    """Every assigned replica answers, correctly; the last answer's statuses."""
    out: list[dict[str, Any]] = []
    for c in env.assigned(job_id):
        (mine,) = [a for a in env.pull(c) if a["job_id"] == job_id]
        out = env.post_results(c, [env.result_item(mine, c.device)])
    return out


def _status(env: ApiEnv, job_id: str) -> str:
    with session_scope(env.ctx.engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return str(job.status)


def test_the_last_vote_decides_the_job_in_its_request(ready: ApiEnv) -> None:
    env = ready
    charged = int(env.balance()["charged_wei"])
    job = env.submit_job(samples(2, start=3))
    (last,) = _answer_all(env, job["job_id"])
    assert last["status"] == "accepted", last
    # no reconcile was run: the request that stored the second vote decided the job
    done = env.http.get(f"/v1/jobs/{job['job_id']}").json()
    assert done["status"] == "accepted"
    assert done["outputs"] is not None and len(done["attestations"]) == 2
    assert int(env.balance()["charged_wei"]) == charged + int(job["price_wei"])
    with session_scope(env.ctx.engine) as session:
        invariants.check_money(session)  # paid out of escrow, to the wei
    assert env.reconcile().accepted == 0  # the reconciler finds nothing left to decide


def test_with_inline_decisions_off_the_reconciler_decides(ready: ApiEnv, setting: Any) -> None:
    env = ready
    setting("reconcile_inline_max", 0)
    job = env.submit_job(samples(2, start=7))
    _answer_all(env, job["job_id"])
    assert _status(env, job["job_id"]) == JobStatus.SUBMITTED
    report = env.reconcile()
    assert job["job_id"] in report.job_ids
    assert _status(env, job["job_id"]) == JobStatus.ACCEPTED


def test_a_decision_that_fails_in_the_request_loses_no_vote(
    ready: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken check inside the request's decision rolls back the decision only: both
    votes are kept, the job waits for the reconciler, which decides it once the fault is
    gone."""
    env = ready
    job = env.submit_job(samples(2, start=11))

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise InvariantViolation("planted: the decision's money does not balance")

    monkeypatch.setattr(reconcile.invariants, "unit_conserves", broken)
    (last,) = _answer_all(env, job["job_id"])
    assert last["status"] == "accepted"  # the vote itself was taken
    assert _status(env, job["job_id"]) == JobStatus.SUBMITTED
    with session_scope(env.ctx.engine) as session:
        votes = session.exec(
            select(Assignment).where(
                Assignment.job_id == job["job_id"],
                Assignment.status == AssignmentStatus.SUBMITTED,
            )
        ).all()
        assert len(votes) == 2
        invariants.check_money(session)  # nothing of the failed decision was written
    monkeypatch.undo()
    assert job["job_id"] in env.reconcile().job_ids
    assert _status(env, job["job_id"]) == JobStatus.ACCEPTED


def _job_body(env: ApiEnv, rows: int, start: int) -> dict[str, Any]:
    """A signed request paying the harness client's next voucher, not yet sent."""
    return env.next_body(samples(rows, start=start))


def test_post_waits_for_the_decision_when_asked(ready: ApiEnv) -> None:
    env = ready
    body = _job_body(env, 2, 21)
    answered: dict[str, Any] = {}

    def client() -> None:
        answered["r"] = env.http.post("/v1/jobs", json=body, params={"wait_s": 20})

    sender = threading.Thread(target=client)
    sender.start()
    deadline = time.monotonic() + 20
    job_id = None
    while job_id is None and time.monotonic() < deadline:  # admitted: the workers answer
        with session_scope(env.ctx.engine) as session:
            row = session.exec(
                select(Job).where(Job.voucher_signature == body["signature"])
            ).first()
            job_id = row.id if row is not None else None
        time.sleep(0.02)
    assert job_id is not None
    assert sender.is_alive()  # still waiting: not decided yet
    _answer_all(env, job_id)
    sender.join(20)
    r = answered["r"]
    assert r.status_code == 200, r.text
    assert r.json()["job_id"] == job_id and r.json()["status"] == "accepted"
    assert len(r.json()["attestations"]) == 2


def test_post_wait_that_runs_out_answers_202_pending(ready: ApiEnv) -> None:
    env = ready
    body = _job_body(env, 1, 31)
    started = time.monotonic()
    r = env.http.post("/v1/jobs", json=body, params={"wait_s": 0.3})
    assert time.monotonic() - started >= 0.3
    assert r.status_code == 202 and r.json()["status"] == "pending"
    _answer_all(env, r.json()["job_id"])
    # the same request again (a retry) waits as well, and finds it decided: 200
    again = env.http.post("/v1/jobs", json=body, params={"wait_s": 5})
    assert again.status_code == 200 and again.json()["status"] == "accepted"


@pytest.mark.parametrize("wait_s", ["-1", "61", "soon", "nan"])
def test_a_bad_wait_is_refused_and_admits_nothing(ready: ApiEnv, wait_s: str) -> None:
    env = ready
    before = env.balance()
    body = _job_body(env, 1, 41)
    r = env.http.post(
        "/v1/jobs", content=json.dumps(body), params={"wait_s": wait_s},
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 422 and r.json()["error"] == "invalid_body", r.text
    assert env.balance() == before  # nothing charged, no voucher taken


# The statements one paid CNN request runs in the API, step by step, with the chain index's
# catch-up and the once-a-second rewrites of a worker's row held off (they come at most once
# a second, not per request). Counted, not timed: a statement added to the path, or one
# that comes back (a second lock of the same accounts, a re-read of the same rows), fails
# here on any machine. docs/performance.md, *Latency added*, says what each step runs.
STATEMENT_BUDGET = {
    "admission": 13,  # BEGIN, 6 reads (accounts, client, retries, workers, their load,
    # known transfers), 5 writes (hold, its balance, job, assignments, client), the check
    "delivery": 5,  # BEGIN, sign-in check, chain cursor, assignments, delivered
    "first vote, then a look for work": 7,  # BEGIN, sign-in, held, vote, counts; cursor, work
    "last vote, its decision, then a look for work": 19,
    "the client's read of the decided job": 3,  # BEGIN, job, votes
}


def test_a_paid_requests_path_runs_a_fixed_number_of_statements(
    ready: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import event

    from ledger import scheduler, work

    env = ready
    env.answer_all()
    _answer_all(env, env.submit_job(samples(1, start=10))["job_id"])  # the client is known
    with session_scope(env.ctx.engine) as session:  # every account a payment may credit
        payees = [journal.contributor_account(c.address) for c in env.contributors]
        journal.lock_accounts(session, [*payees, journal.TREASURY])
    for c in env.contributors:
        env.pull(c)  # each worker's eligibility read: within the catch-up's interval from here
    monkeypatch.setattr(env.ctx.catch_up, "min_interval_s", 3600.0)
    monkeypatch.setattr(scheduler, "CHECKED_RESOLUTION_S", 3600.0)
    monkeypatch.setattr(work, "SEEN_RESOLUTION_S", 3600.0)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    body = env.next_body(samples(1, start=11))
    counts: dict[str, int] = {}
    event.listen(env.ctx.engine, "before_cursor_execute", count)
    try:

        def step(name: str, call: Any) -> Any:
            statements.clear()
            out = call()
            counts[name] = len(statements)
            return out

        r = step("admission", lambda: env.http.post("/v1/jobs", json=body))
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        first, last = env.assigned(job_id)
        pulled = {}
        for c in (first, last):
            r = step("delivery", lambda c=c: env.http.get("/v1/work", headers=c.headers))
            (pulled[c.worker],) = r.json()["assignments"]
        for c, name in (
            (first, "first vote, then a look for work"),
            (last, "last vote, its decision, then a look for work"),
        ):
            item = env.result_item(pulled[c.worker], c.device)
            r = step(
                name,
                lambda c=c, item=item: env.http.post(
                    "/v1/work/results?max=8&wait_s=0", json={"results": [item]}, headers=c.headers
                ),
            )
            assert r.json()["results"][0]["status"] == "accepted", r.text
        r = step("the client's read of the decided job", lambda: env.http.get(f"/v1/jobs/{job_id}"))
        assert r.json()["status"] == "accepted"
    finally:
        event.remove(env.ctx.engine, "before_cursor_execute", count)
    assert counts.keys() == STATEMENT_BUDGET.keys()
    over = {k: (n, STATEMENT_BUDGET[k]) for k, n in counts.items() if n > STATEMENT_BUDGET[k]}
    assert not over, f"statements over budget (ran, budget): {over}; all: {counts}"
