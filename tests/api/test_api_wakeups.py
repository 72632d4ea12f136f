"""Long polls answered by wake-ups (ledger/notify.py) over the real Redis: an idle worker's
``GET /v1/work?wait_s=`` answers when an assignment for it commits, a client's
``GET /v1/jobs/{id}?wait_s=`` when the decision commits. The waiters' fallback read is set to
30 s here, so an answer within the test's few seconds can only come from a wake-up."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_harness import ApiEnv, api_env, own_celery_queue, samples, served  # noqa: E402

from ledger import notify  # noqa: E402
from ledger.db import engine_for  # noqa: E402

WAIT_S = 8.0
PROMPT_S = 4.0  # an answer woken up comes within this (a busy 2-core machine included)


@pytest.fixture(scope="module")
def env(chain: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    with (
        own_celery_queue(redis_url, "inferledger-wakeup-tests-"),
        api_env(
            chain.w3,
            chain.rpc_url,
            chain.keys,
            tmp_path_factory.mktemp("wakeups"),
            redis_url=redis_url,
        ) as env,
    ):
        env.sign_in_all()
        yield env


@pytest.fixture
def url(env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(notify, "FALLBACK_S", 30.0)
    with served(env.http.app) as base:
        yield base


def _in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        start = time.monotonic()
        out["response"] = call()
        out["took"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _subscribed(env: ApiEnv) -> None:
    listener = notify.listener(env.ctx.settings.redis_url)
    with listener.watch(notify.WORK, "nobody"):  # starts the subscription
        assert listener.connected.wait(10), "the wake-up subscription did not start"


def test_an_idle_pull_answers_when_work_for_it_commits(env: ApiEnv, url: str) -> None:
    _subscribed(env)
    env.answer_all()  # nothing left over from other tests
    polls = {}
    for c in env.contributors:
        polls[c.address] = _in_thread(
            lambda c=c: httpx.get(
                f"{url}/v1/work", params={"wait_s": WAIT_S}, headers=c.headers, timeout=30
            )
        )
    time.sleep(0.5)  # the pulls are waiting
    job_id = env.submit_job(samples(1))["job_id"]
    assigned = {c.address for c in env.assigned(job_id)}
    assert len(assigned) == 2
    for address, (thread, out) in polls.items():
        thread.join(30)
        assert out["response"].status_code == 200, out["response"].text
        got = [a["job_id"] for a in out["response"].json()["assignments"]]
        if address in assigned:
            assert got == [job_id]
            assert out["took"] < 0.5 + PROMPT_S, out["took"]
        else:
            assert got == []
            assert out["took"] >= WAIT_S - 0.5, out["took"]  # waited the whole time
    env.answer_all()


def test_a_clients_long_poll_answers_when_the_decision_commits(env: ApiEnv, url: str) -> None:
    _subscribed(env)
    job_id = env.submit_job(samples(1, start=3))["job_id"]
    for c in env.assigned(job_id):
        mine = [a for a in env.pull(c) if a["job_id"] == job_id]
        env.post_results(c, [env.result_item(mine[0], c.device)])
    thread, out = _in_thread(
        lambda: httpx.get(f"{url}/v1/jobs/{job_id}", params={"wait_s": 20}, timeout=30)
    )
    time.sleep(0.5)
    assert thread.is_alive()  # submitted, not decided: it waits
    assert env.reconcile().accepted == 1  # commits in this process: woken without Redis
    thread.join(30)
    assert out["response"].json()["status"] == "accepted"
    assert out["took"] < 0.5 + PROMPT_S, out["took"]


def test_only_committed_work_is_published(redis_url: str, sqlite_url: str) -> None:
    listener = notify.listener(redis_url)
    engine = engine_for(sqlite_url)
    with (
        listener.watch(notify.DECIDED, "rolled-back") as rolled,
        listener.watch(notify.DECIDED, "committed") as committed,
    ):
        assert listener.connected.wait(10)
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            notify.decided(session, redis_url, ["rolled-back"])
            session.rollback()
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            notify.decided(session, redis_url, ["committed"])
            session.commit()
        assert committed.wait(PROMPT_S)
        assert not rolled.is_set()  # it would have come first: one connection, in order


def test_a_publish_that_fails_leaves_the_commit_standing(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_for(sqlite_url)
    with Session(engine) as session, caplog.at_level(logging.WARNING, logger="ledger.notify"):
        session.execute(text("CREATE TABLE t (x INTEGER)"))
        session.execute(text("INSERT INTO t VALUES (1)"))
        notify.work_for(session, "redis://127.0.0.1:1/0", ["0xabc"])  # nothing listens there
        session.commit()
    with Session(engine) as session:
        assert session.execute(text("SELECT x FROM t")).scalar_one() == 1
    assert "wake-ups not published" in caplog.text


def test_a_commit_wakes_this_processs_waiters_without_redis(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's own waiters are woken by its commit at once, Redis or not: here nothing
    listens at the address (and no subscription is started), so the publish fails and only
    the local wake-up can answer."""
    nowhere = "redis://127.0.0.1:1/1"  # its own: the failed publish quiets only this one
    monkeypatch.setattr(notify.Listener, "_start", lambda self: None)
    engine = engine_for(sqlite_url)
    with (
        notify.listener(nowhere).watch(notify.WORK, "0xlocal") as woken,
        notify.listener(nowhere).watch(notify.WORK, "0xother") as other,
        caplog.at_level(logging.WARNING, logger="ledger.notify"),
    ):
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            notify.work_for(session, nowhere, ["0xLOCAL"])
            assert not woken.is_set()  # not before the commit
            session.commit()
        assert woken.is_set()  # set by the commit itself: no wait at all
        assert not other.is_set()
    assert "wake-ups not published" in caplog.text  # Redis had no part in it


def test_the_listener_skips_its_own_processs_messages(redis_url: str) -> None:
    """Messages carry their process's name: one from another process wakes its waiters (the
    old form without a name too); this process's own, come back through Redis, do not wake
    them a second time (their commit woke them already)."""
    import redis as redis_lib

    listener = notify.listener(redis_url)
    client = redis_lib.Redis.from_url(redis_url)
    try:
        with listener.watch(notify.DECIDED, "0xjob") as woken:
            assert listener.connected.wait(10)
            heard = listener.heard
            client.publish(notify.DECIDED, notify._origin + notify.ORIGIN_END + "0xjob")
            client.publish(notify.DECIDED, "another-process" + notify.ORIGIN_END + "0xnone")
            deadline = time.monotonic() + PROMPT_S
            while listener.heard < heard + 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert listener.heard == heard + 2  # both heard, in order
            assert not woken.is_set()  # its own message: skipped
            client.publish(notify.DECIDED, "another-process" + notify.ORIGIN_END + "0xjob")
            assert woken.wait(PROMPT_S)
            woken.clear()
            client.publish(notify.DECIDED, "0xjob")  # no name: from before names
            assert woken.wait(PROMPT_S)
    finally:
        client.close()
