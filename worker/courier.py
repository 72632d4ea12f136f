"""The agent's exchanges with the API besides pulling: results submitted in batches,
assignments handed back, heartbeats and the earnings check. Outcomes are counted in the
agent's ``Stats``; none of these calls stops the agent, except a refused sign-in.

A result waits at most ``submit_linger_s`` for others to share its POST (none when nothing
else is running), and a POST carries at most ``submit_batch`` results and ``submit_max_bytes``
of them; a batch the API refuses as a whole is dropped, and the API delivers those
jobs again. A hand-back is not retried: if it fails, the assignment's deadline hands the
job on instead. A route the API lacks (an older API: 404) is not asked again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from worker.api_client import ApiClient, SubmitStatus
from worker.config import WorkerSettings
from worker.errors import ApiError, AuthRefused
from worker.holdings import Holdings
from worker.retry import Cancel, Deadline
from worker.stats import Stats

logger = logging.getLogger(__name__)


def by_size(results: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """``results`` in order, split so that each part's JSON stays within ``max_bytes`` (a
    result larger than that alone goes alone): outputs are revealed with every result, so a
    full batch of a large model's results can pass the API's request body limit."""
    parts: list[list[dict[str, Any]]] = []
    size = max_bytes
    for result in results:
        length = len(json.dumps(result, separators=(",", ":"))) + 1
        if size + length > max_bytes:
            parts.append([])
            size = len('{"results":[]}')
        parts[-1].append(result)
        size += length
    return parts


class Courier:
    def __init__(
        self, settings: WorkerSettings, client: ApiClient, held: Holdings, stats: Stats
    ) -> None:
        self.settings = settings
        self.stopping = False  # hand-backs say why
        self._client = client
        self._held = held
        self.stats = stats
        self._missing: set[str] = set()  # optional routes this API does not have
        self.next_beat = 0.0
        self._next_earnings = 0.0

    def flush(self, cancel: Cancel, *, force: bool) -> None:
        """Submit the results that are due (all of them when ``force``), then hand back."""
        size = self.settings.submit_batch
        while self._held.ready and (force or self._submit_due()):
            for part in by_size(self._held.take_ready(size), self.settings.submit_max_bytes):
                self._submit(part, cancel)
        while self._held.to_release:
            self._release(self._held.take_release(size), cancel)
        self.stats.held = self._held.count()

    def _submit_due(self) -> bool:
        ready, since = self._held.ready, self._held.ready_since
        return (
            len(ready) >= self.settings.submit_batch
            or not self._held.running
            or (since is not None and time.monotonic() - since >= self.settings.submit_linger_s)
        )

    def _submit(self, results: list[dict[str, Any]], cancel: Cancel) -> None:
        try:
            statuses = self._client.submit(results, cancel)
        except AuthRefused:
            raise
        except ApiError as exc:
            self._failed(results, exc)
            return
        self._count(results, statuses)

    def submit_and_pull(
        self, results: list[dict[str, Any]], max_items: int, wait_s: float, cancel: Cancel
    ) -> list[Any] | None:
        """Submit ``results`` and pull in one exchange (``ApiClient.submit_and_pull``): the
        raw assignments, or None where nothing was pulled (an error: the results are
        dropped as ``_submit`` drops them; an API that does not pull there)."""
        try:
            statuses, pulled = self._client.submit_and_pull(results, max_items, wait_s, cancel)
        except AuthRefused:
            raise
        except ApiError as exc:
            self._failed(results, exc)
            return None
        self._count(results, statuses)
        return pulled

    def _failed(self, results: list[dict[str, Any]], exc: ApiError) -> None:
        """The results are dropped; the API delivers the jobs again."""
        self.stats.errors += len(results)
        self.stats.api_errors += 1
        logger.error(
            "could not submit %d results: %s",
            len(results),
            exc,
            extra={"event": "submit_failed", "code": exc.error},
        )

    def _count(self, results: list[dict[str, Any]], statuses: list[SubmitStatus]) -> None:
        by_id = {s.job_id: s for s in statuses}
        for result in results:
            job_id = result["job_id"]
            status = by_id.get(job_id)
            if status is None:
                self.stats.errors += 1
                logger.warning("no status for job %s in the answer", job_id)
            elif status.accepted:
                self.stats.add_done()
            else:
                self.stats.refused += 1
                self._held.hand_back(job_id)  # a no-op for the API unless it still holds it
                logger.warning(
                    "job %s refused: %s: %s",
                    job_id,
                    status.error,
                    status.detail,
                    extra={"event": "refused", "job_id": job_id, "code": status.error},
                )
        logger.debug("submitted %d results", len(results), extra={"event": "submitted"})

    def _release(self, job_ids: list[str], cancel: Cancel) -> None:
        if "release" in self._missing:
            return
        reason = "stopping" if self.stopping else "skipped"
        try:
            released = self._client.release(job_ids, reason, cancel)
        except AuthRefused:
            raise
        except ApiError as exc:  # not retried: the deadline hands them on instead
            self._optional_failed("release", exc)
            return
        self.stats.handed_back += len(released)
        logger.info(
            "handed back %d jobs (%s)",
            len(released),
            reason,
            extra={"event": "handed_back", "jobs": released, "reason": reason},
        )

    def beat(self, stop: threading.Event) -> None:
        """The heartbeat and the earnings check, when due; each gives up after a while."""
        now = time.monotonic()
        timeout_s = min(self.settings.heartbeat_interval_s, self.settings.request_timeout_s)
        if now >= self.next_beat and "heartbeat" not in self._missing:
            self.next_beat = now + self.settings.heartbeat_interval_s
            try:
                presence = self._client.heartbeat(Deadline(stop, timeout_s))
            except AuthRefused:
                raise
            except ApiError as exc:
                self._optional_failed("heartbeat", exc)
            else:
                if presence.eligible is False and self.stats.eligible is not False:
                    logger.warning(
                        "the API gives this worker no new work: it is not eligible on chain "
                        "(registration, stake or jail)",
                        extra={"event": "not_eligible"},
                    )
                self.stats.eligible = presence.eligible
        every = self.settings.earnings_interval_s
        if every > 0 and now >= self._next_earnings and "earnings" not in self._missing:
            self._next_earnings = now + every
            try:
                earnings = self._client.earnings(Deadline(stop, timeout_s))
            except AuthRefused:
                raise
            except ApiError as exc:
                self._optional_failed("earnings", exc)
            else:
                self.stats.pending_wei = earnings.pending_wei

    def _optional_failed(self, what: str, exc: ApiError) -> None:
        if exc.status in (404, 405):
            self._missing.add(what)
            logger.info("this API has no %s route; not asking again", what)
            return
        self.stats.api_errors += 1
        logger.warning("%s failed: %s", what, exc, extra={"event": f"{what}_failed"})
