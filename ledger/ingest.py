"""Group commit for paid jobs: requests are checked on their own path (inputs, voucher
signature), then admitted together, many per unit of work, by one committer thread per
process; each request is answered once its batch has committed.

The committer takes whatever queued while it was committing the previous batch. Under load
(that batch had company) it also waits up to ``ingest_linger_s`` for more, so each
transaction's fixed cost is shared by more requests; a lone request is admitted at once. A
batch that fails as a whole (a database error, a broken invariant) is
retried one request at a time, so one bad request cannot fail the others."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future

from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import Busy
from ledger.jobs import JobRow, Outcome, Prepared, admit
from ledger.models import Job

logger = logging.getLogger(__name__)

Item = tuple[Prepared, "Future[tuple[Job | JobRow, bool]]"]


class Ingest:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.batch_max = ctx.settings.ingest_batch_max
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.batches = 0
        self.admitted = 0
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def submit(self, prepared: Prepared) -> tuple[Job | JobRow, bool]:
        """Admit one prepared request; returns (job, created) once committed, or raises why
        it was refused."""
        future: Future[tuple[Job | JobRow, bool]] = Future()
        self.queue.put((prepared, future))
        try:
            return future.result(timeout=self.ctx.settings.ingest_timeout_s)
        except TimeoutError as exc:  # it may still commit: a retry with the voucher finds it
            raise self._busy() from exc

    async def submit_async(self, prepared: Prepared) -> tuple[Job | JobRow, bool]:
        """``submit`` for an event loop: waits for the commit without holding a thread."""
        future: Future[tuple[Job | JobRow, bool]] = Future()
        self.queue.put((prepared, future))
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), self.ctx.settings.ingest_timeout_s
            )
        except TimeoutError as exc:
            raise self._busy() from exc

    def _busy(self) -> Busy:
        return Busy(
            f"not admitted within {self.ctx.settings.ingest_timeout_s} s; retry the same "
            "request (it is idempotent: the same voucher names the same job)"
        )

    def _run(self) -> None:
        busy = False
        while True:
            items = [self.queue.get()]
            # under load (the last batch had company) wait a little for more: bigger batches
            # share each transaction's fixed cost; a lone request is committed at once
            deadline = time.monotonic() + (self.ctx.settings.ingest_linger_s if busy else 0.0)
            while len(items) < self.batch_max:
                try:
                    left = deadline - time.monotonic()
                    items.append(
                        self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                    )
                except queue.Empty:
                    break
            busy = len(items) > 1
            self._commit(items)

    def _commit(self, items: list[Item]) -> None:
        try:
            with session_scope(self.ctx.engine) as session:
                outcomes = admit(session, self.ctx, [p for p, _ in items])
        except Exception as exc:  # the whole unit failed: nothing of it was committed
            if len(items) > 1:
                logger.warning("a batch of %d failed (%r); admitting one by one", len(items), exc)
                for item in items:
                    self._commit([item])
            else:
                items[0][1].set_exception(exc)
            return
        self.batches += 1
        self.admitted += len(items)
        for (_, future), outcome in zip(items, outcomes, strict=True):
            _settle(future, outcome)


def _settle(future: Future[tuple[Job | JobRow, bool]], outcome: Outcome) -> None:
    if isinstance(outcome, tuple):
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
