"""Fixtures of the API tests: one API over real parts per test module (``env``).

A module may set ``API_SETTINGS = {...}`` to override settings of its API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_harness import ApiEnv, api_env, own_celery_queue

QUEUE_PREFIX = "inferledger-api-tests-"


@pytest.fixture(scope="module", autouse=True)
def celery_queue(redis_url: str) -> Iterator[str]:
    with own_celery_queue(redis_url, QUEUE_PREFIX) as queue:
        yield queue


@pytest.fixture(scope="module")
def env(
    request: pytest.FixtureRequest, chain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiEnv]:
    overrides = getattr(request.module, "API_SETTINGS", {})
    data_dir = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with api_env(chain.w3, chain.rpc_url, chain.keys, data_dir, **overrides) as e:
        yield e
