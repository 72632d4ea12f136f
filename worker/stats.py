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
TOKEN_DECIMALS = 18  # the compute token's, as the rest of the command line shows amounts


@dataclass
class Stats:
    """``done``: results the API accepted; ``refused``: results it refused; ``errors``:
    assignments skipped (malformed, mismatched, failed) plus results that could not be
    submitted; ``handed_back``: assignments the API took back. ``inference_s`` and
    ``overhead_s`` (checking, hashing, signing) are summed over the ``signed`` jobs.
    ``eligible`` and ``pending_wei`` are the API's last answers (None: not asked yet)."""

    workers: int = 1
    started: float = field(default_factory=time.monotonic)
    pulled: int = 0
    held: int = 0
    done: int = 0
    refused: int = 0
    errors: int = 0
    handed_back: int = 0
    rows: int = 0
    signed: int = 0
    api_errors: int = 0
    inference_s: float = 0.0
    overhead_s: float = 0.0
    eligible: bool | None = None
    pending_wei: int | None = None
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def add_signed(self, rows: int, inference_s: float, overhead_s: float) -> None:
        self.signed += 1
        self.rows += rows
        self.inference_s += inference_s
        self.overhead_s += overhead_s

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
            "workers": self.workers,
            "pulled": self.pulled,
            "held": self.held,
            "done": self.done,
            "refused": self.refused,
            "errors": self.errors,
            "handed_back": self.handed_back,
            "api_errors": self.api_errors,
            "rows": self.rows,
            "rate_per_s": round(self.rate(), 3),
            "inference_us": round(self.inference_us(), 1),
            "overhead_us": round(self.overhead_us(), 1),
            "eligible": self.eligible,
            "pending_wei": None if self.pending_wei is None else str(self.pending_wei),
            "uptime_s": round(self.elapsed(), 1),
        }

    def line(self) -> str:
        pending = "?" if self.pending_wei is None else tokens(self.pending_wei)
        warning = " · NOT ELIGIBLE" if self.eligible is False else ""
        return (
            f"{self.done} done · {self.rate():.1f}/s · {self.refused} refused · "
            f"{self.errors} err · {self.handed_back} handed back · {self.held} held · "
            f"pending {pending} ILC · infer {self.inference_us():.0f}µs · "
            f"own {self.overhead_us():.0f}µs per job{warning}"
        )


def tokens(wei: int, places: int = 6) -> str:
    """``wei`` in whole tokens with ``places`` decimals, truncated (integers only)."""
    whole, fraction = divmod(wei, 10**TOKEN_DECIMALS)
    return f"{whole:,}.{fraction:0{TOKEN_DECIMALS}d}"[: len(f"{whole:,}") + 1 + places]
