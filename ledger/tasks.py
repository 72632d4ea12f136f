"""Celery tasks. Each is idempotent: the database says what is left to do, so a task that
runs twice, or a message that is redelivered, changes nothing the second time."""

from __future__ import annotations

import logging
from functools import lru_cache

import redis

from ledger.celery_app import app
from ledger.config import get_settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.epochs import close_epoch as close_epoch_now
from ledger.reconcile import reconcile_batch

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def context() -> Context:
    return Context(get_settings())


@app.task(name="ledger.tasks.reconcile")  # type: ignore[untyped-decorator]
def reconcile() -> int:
    """Decide every job whose replicas have all answered, a batch per unit of work."""
    ctx = context()
    decided = 0
    while True:
        with session_scope(ctx.engine) as session:
            report = reconcile_batch(session, ctx, ctx.settings.reconcile_batch_size)
        decided += report.accepted + report.failed + report.extended
        if report.accepted + report.failed + report.extended < ctx.settings.reconcile_batch_size:
            return decided


@app.task(name="ledger.tasks.close_epoch")  # type: ignore[untyped-decorator]
def close_epoch() -> int | None:
    """Close and settle the next epoch; one at a time across all Celery workers."""
    ctx = context()
    lock = redis.Redis.from_url(ctx.settings.redis_url).lock(
        f"{ctx.settings.celery_queue}:close-epoch",
        timeout=ctx.settings.epoch_lock_timeout_s,
        blocking=False,
    )
    if not lock.acquire():
        logger.info("another worker is closing an epoch")
        return None
    try:
        outcome = close_epoch_now(ctx)
        return outcome.number if outcome else None
    finally:
        lock.release()
