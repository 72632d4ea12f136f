"""Fixtures of the API tests: one API over real parts per test module (``env``).

A module may set ``API_SETTINGS = {...}`` to override settings of its API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from api_harness import ApiEnv, api_env

from ledger.config import get_settings

QUEUE_PREFIX = "inferledger-api-tests-"


@pytest.fixture(scope="module", autouse=True)
def celery_queue(redis_url: str) -> Iterator[str]:
    """The API enqueues a reconcile when a job's replicas have all answered (the tests
    reconcile themselves). The Celery app reads its settings once, at import: point it at a
    queue of its own on the real Redis that nothing consumes, and empty that afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERLEDGER_REDIS_URL", redis_url)
        mp.setenv("INFERLEDGER_CELERY_QUEUE", QUEUE_PREFIX + uuid.uuid4().hex[:10])
        get_settings.cache_clear()
        import ledger.celery_app

        queue = str(ledger.celery_app.app.conf.task_default_queue)
    get_settings.cache_clear()
    yield queue
    if queue.startswith(QUEUE_PREFIX):
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"*{queue}*"):
            r.delete(key)


@pytest.fixture(scope="module")
def env(
    request: pytest.FixtureRequest, chain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiEnv]:
    overrides = getattr(request.module, "API_SETTINGS", {})
    data_dir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with api_env(chain.w3, chain.rpc_url, chain.keys, data_dir, **overrides) as e:
        yield e
