"""Retry delays (exponential with jitter) and the cancellation the retry loops obey."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class Cancel(Protocol):
    """What a retry loop asks: stop retrying now? ``threading.Event`` is one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Never:
    """A ``Cancel`` that never cancels; waits simply sleep."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(timeout or 0.0)
        return False


class Grace:
    """Cancels once ``stop`` has been set for ``grace_s``: lets held results be submitted
    after a stop was asked for, but not forever."""

    def __init__(self, stop: threading.Event, grace_s: float) -> None:
        self._stop = stop
        self._grace_s = grace_s
        self._since: float | None = None

    def _remaining(self) -> float | None:
        if not self._stop.is_set():
            return None
        if self._since is None:
            self._since = time.monotonic()
        return self._grace_s - (time.monotonic() - self._since)

    def is_set(self) -> bool:
        remaining = self._remaining()
        return remaining is not None and remaining <= 0

    def wait(self, timeout: float | None = None) -> bool:
        delay = timeout or 0.0
        if self._remaining() is None:
            self._stop.wait(delay)  # a stop cuts this wait short: retry once at once
            return self.is_set()
        remaining = self._remaining()
        if remaining is not None and remaining > 0:
            time.sleep(min(delay, remaining))
        return self.is_set()


class Deadline:
    """Cancels after ``timeout_s``, or at once when ``stop`` is set: for calls that may be
    skipped (a heartbeat), so that an API that is away does not hold the agent up."""

    def __init__(self, stop: threading.Event, timeout_s: float) -> None:
        self._stop = stop
        self._until = time.monotonic() + timeout_s

    def is_set(self) -> bool:
        return self._stop.is_set() or time.monotonic() >= self._until

    def wait(self, timeout: float | None = None) -> bool:
        remaining = self._until - time.monotonic()
        if remaining > 0:
            self._stop.wait(min(timeout or 0.0, remaining))
        return self.is_set()


class Backoff:
    """Exponential delays from ``initial_s`` up to ``max_s``, each with "equal jitter"
    (a random value in [d/2, d]) so that many workers do not retry in lockstep."""

    def __init__(
        self, initial_s: float, max_s: float, rand: Callable[[], float] = random.random
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0
        self._rand = rand

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (1 << min(self.attempts, 62)))
        self.attempts += 1
        return ceiling / 2 + self._rand() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
