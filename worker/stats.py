"""The agent's counters, and the one-line summary shown live and logged periodically."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

US_PER_S = 1_000_000
RATE_WINDOW_S = 10.0  # the live rate is over this recent window


@dataclass
class Stats:
    """``done``: results the API accepted; ``refused``: results it refused; ``errors``:
    assignments skipped (malformed, mismatched, failed) plus results that could not be
    submitted. ``inference_s`` and ``overhead_s`` (hashing and signing) are summed over the
    ``signed`` jobs."""

    started: float = field(default_factory=time.monotonic)
    pulled: int = 0
    done: int = 0
    refused: int = 0
    errors: int = 0
    rows: int = 0
    signed: int = 0
    api_errors: int = 0
    inference_s: float = 0.0
    overhead_s: float = 0.0
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def add_done(self, count: int = 1) -> None:
        now = time.monotonic()
        self.done += count
        self._recent.append((now, count))
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
            self._recent.popleft()

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def rate(self) -> float:
        """Accepted jobs per second over the last ``RATE_WINDOW_S`` (or since the start)."""
        now = time.monotonic()
        recent = sum(count for at, count in list(self._recent) if at >= now - RATE_WINDOW_S)
        return recent / min(self.elapsed(), RATE_WINDOW_S)

    def overhead_us(self) -> float:
        """Mean checking, hashing and signing time per signed job, in microseconds."""
        return self.overhead_s / self.signed * US_PER_S if self.signed else 0.0

    def inference_us(self) -> float:
        return self.inference_s / self.signed * US_PER_S if self.signed else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled,
            "done": self.done,
            "refused": self.refused,
            "errors": self.errors,
            "api_errors": self.api_errors,
            "rows": self.rows,
            "rate_per_s": round(self.rate(), 3),
            "inference_us": round(self.inference_us(), 1),
            "overhead_us": round(self.overhead_us(), 1),
            "uptime_s": round(self.elapsed(), 1),
        }

    def line(self) -> str:
        return (
            f"{self.done} done · {self.refused} refused · {self.errors} err · "
            f"{self.rate():.1f}/s · infer {self.inference_us():.0f}µs · "
            f"hash+sign {self.overhead_us():.0f}µs"
        )
