"""Process-wide settings of the long-running services (API, Celery workers)."""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


def tune_gc() -> None:
    """Move everything start-up allocated (modules, SQLAlchemy's compiled statements) into
    the permanent generation and collect the young generation less often. The hot paths
    (reconcile, admission) allocate tens of thousands of short-lived objects per batch; with
    the defaults the collector keeps re-scanning the long-lived heap underneath them
    (measured in ``bench/reconcile.py``, see docs/performance.md). Cycles are still
    collected, only later; forked Celery children also keep the frozen pages shared."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
