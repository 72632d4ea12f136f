"""Celery tasks. Each is idempotent: the database says what is left to do, so a task that
runs twice, or a message that is redelivered, changes nothing the second time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import redis

from ledger.celery_app import app
from ledger.chain.index import ChainIndex
from ledger.config import get_settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.epochs import close_epoch as close_epoch_now
from ledger.reconcile import reconcile_batch
from ledger.slashing import submit_slashes
from ledger.sweep import sweep as sweep_now

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


@app.task(name="ledger.tasks.sweep")  # type: ignore[untyped-decorator]
def sweep() -> int:
    """Expire and replace overdue assignments; fail jobs past their timeout (refunded)."""
    ctx = context()
    with session_scope(ctx.engine) as session:
        report = sweep_now(session, ctx)
    return report.expired + report.timed_out


@contextmanager
def settler_lock(ctx: Context) -> Iterator[bool]:
    """One sender of settler-key transactions at a time across all Celery workers (the nonce
    allocator is per process). Yields False if another holds it; beat will try again."""
    lock = redis.Redis.from_url(ctx.settings.redis_url).lock(
        f"{ctx.settings.celery_queue}:settler",
        timeout=ctx.settings.epoch_lock_timeout_s,
        blocking=False,
    )
    acquired = bool(lock.acquire())
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


@app.task(name="ledger.tasks.close_epoch")  # type: ignore[untyped-decorator]
def close_epoch() -> int | None:
    """Close and settle the next epoch."""
    ctx = context()
    with settler_lock(ctx) as mine:
        if not mine:
            logger.info("another worker holds the settler key's lock")
            return None
        outcome = close_epoch_now(ctx)
        return outcome.number if outcome else None


@app.task(name="ledger.tasks.slash")  # type: ignore[untyped-decorator]
def slash() -> int:
    """Submit the slashes whose evidence is final (a finalized epoch), a batch at a time."""
    ctx = context()
    with settler_lock(ctx) as mine:
        return len(submit_slashes(ctx, ctx.settings.slash_batch_max)) if mine else 0


@lru_cache(maxsize=1)
def chain_index() -> ChainIndex:
    return ChainIndex.from_context(context())


@app.task(name="ledger.tasks.index_chain")  # type: ignore[untyped-decorator]
def index_chain() -> int:
    """Read the contracts' new events into the database (``ledger.chain.index``); undo a
    reorganisation first if there was one. Returns the number of events stored."""
    report = chain_index().sync()
    if report.removed_confirmed:
        logger.error("%s confirmed events were reorganised away", report.removed_confirmed)
    return report.stored
