"""A poison task for ``test_celery_chaos``: it counts its run in Redis, then kills its own
worker process, every time. Only a worker started with ``--include=tests.e2e.chaos_poison``
knows it."""

from __future__ import annotations

import os
import signal

import redis

from ledger.celery_app import app
from ledger.config import get_settings

POISON = "tests.chaos.poison"


@app.task(name=POISON)  # type: ignore[untyped-decorator]
def poison(runs_key: str) -> None:
    redis.Redis.from_url(get_settings().redis_url).incr(runs_key)
    os.kill(os.getpid(), signal.SIGKILL)
