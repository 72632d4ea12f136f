"""Fixtures of the API tests: one API over real parts per test module (``env``).

A module may set ``API_SETTINGS = {...}`` to override settings of its API. ``setting`` and
``fastapi_only`` use the module's own ``ready`` fixture (its API with the workers signed in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_harness import ApiEnv, api_env, own_celery_queue
from fastapi.testclient import TestClient

import api.deps
import api.main

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


@pytest.fixture
def setting(ready: ApiEnv) -> Iterator[Callable[[str, Any], None]]:
    """Set one of the API's settings for one test (``setting(name, value)``); put back after."""
    before: dict[str, Any] = {}

    def set_to(name: str, value: Any) -> None:
        before.setdefault(name, getattr(ready.ctx.settings, name))
        setattr(ready.ctx.settings, name, value)

    yield set_to
    for name, value in before.items():
        setattr(ready.ctx.settings, name, value)


@pytest.fixture(scope="module")
def fastapi_only(ready: ApiEnv) -> Iterator[TestClient]:
    """The same API with its hot paths left to their FastAPI routes alone (no lean routes)."""
    app = api.main.create_app(lean=False)
    app.dependency_overrides[api.deps.get_context] = lambda: ready.ctx
    with TestClient(app) as http:
        yield http
