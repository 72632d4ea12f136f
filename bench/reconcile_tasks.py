"""The naive baseline of ``bench/reconcile.py``: one Celery task per job, each deciding one
job in its own unit of work. Loaded into the benchmark's worker with ``-I``; not part of
the system."""

from __future__ import annotations

from ledger.celery_app import app
from ledger.db import session_scope
from ledger.reconcile import reconcile_batch
from ledger.tasks import context


@app.task(name="bench.reconcile_one")  # type: ignore[untyped-decorator]
def reconcile_one() -> int:
    ctx = context()
    with session_scope(ctx.engine) as session:
        return reconcile_batch(session, ctx, 1).accepted
