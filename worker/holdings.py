"""What the agent holds: assignments from the pull that delivered them until their result is
submitted or they are handed back.

The API delivers an assignment again on every pull until it is answered, so a pull made
while jobs are held returns them again: ``take`` keeps only new ones. Jobs that must never be
taken again (skipped, refused, handed back, running when a process died) are remembered in a
bounded set; the API stops delivering them once they are handed back or their deadline passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from worker.assignment import HASH32
from worker.runner import Outcome

logger = logging.getLogger(__name__)

IGNORED_MAX = 65536


def job_key(raw: Any) -> tuple[str, bool]:
    """(key, is a job id): the lower-case job id, or a digest of an assignment without a
    well-formed one (so that its re-deliveries are recognised too)."""
    job_id = raw.get("job_id") if isinstance(raw, dict) else None
    if isinstance(job_id, str) and HASH32.fullmatch(job_id):
        return job_id.lower(), True
    text = json.dumps(raw, sort_keys=True, default=repr)
    return "malformed:" + hashlib.sha256(text.encode()).hexdigest()[:32], False


class Holdings:
    def __init__(self) -> None:
        self.running: dict[Future[list[Outcome]], list[str]] = {}  # a chunk's job keys
        self.ready: list[dict[str, Any]] = []  # results to submit
        self.ready_since: float | None = None
        self.to_release: list[str] = []  # job ids to hand back
        self._ready_ids: set[str] = set()
        self._running_ids: set[str] = set()
        self._ignored: OrderedDict[str, None] = OrderedDict()

    def count(self) -> int:
        return len(self._running_ids) + len(self.ready)

    def holds(self, key: str) -> bool:
        return key in self._running_ids or key in self._ready_ids or key in self._ignored

    def start(self, future: Future[list[Outcome]], keys: list[str]) -> None:
        self.running[future] = keys
        self._running_ids.update(keys)

    def finish(self, future: Future[list[Outcome]]) -> list[str]:
        keys = self.running.pop(future)
        self._running_ids.difference_update(keys)
        return keys

    def ignore(self, key: str) -> None:
        self._ignored[key] = None
        self._ignored.move_to_end(key)
        while len(self._ignored) > IGNORED_MAX:
            self._ignored.popitem(last=False)

    def hand_back(self, job_id: str) -> None:
        """Never take this job again, and tell the API so at the next chance."""
        self.ignore(job_id)
        self.to_release.append(job_id)

    def add_ready(self, job_id: str, result: dict[str, Any]) -> None:
        if self.ready_since is None:
            self.ready_since = time.monotonic()
        self.ready.append(result)
        self._ready_ids.add(job_id)

    def take_ready(self, limit: int) -> list[dict[str, Any]]:
        batch, self.ready = self.ready[:limit], self.ready[limit:]
        for item in batch:
            self._ready_ids.discard(item["job_id"])
        self.ready_since = time.monotonic() if self.ready else None
        return batch

    def take_release(self, limit: int) -> list[str]:
        batch, self.to_release = self.to_release[:limit], self.to_release[limit:]
        return batch
