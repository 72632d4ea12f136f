"""A recursion limit that keeps a hostile document from crashing the process.

``py_ecc`` (imported by ``eth_account``) raises Python's recursion limit to 100,000 when it
is imported. The C stack runs out long before that: ``json.loads`` of 100,000 nested
brackets (200 KB, well under the API's body limit) then crashes the process with SIGSEGV
instead of raising ``RecursionError``. Every process that parses untrusted JSON (the API,
the device agent, the auditor and the client CLI, the Celery worker) calls ``bound()`` once
its imports are done."""

from __future__ import annotations

import sys

RECURSION_LIMIT = 4_000  # nested JSON up to about this depth parses; deeper is an error


def bound(limit: int = RECURSION_LIMIT) -> None:
    """Import ``py_ecc`` first (so that a later import cannot raise the limit again), then
    set the limit."""
    import py_ecc  # noqa: F401

    sys.setrecursionlimit(limit)
