"""SIGTERM and SIGINT ask the agent to stop gracefully; a second one stops it at once."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """Make the first SIGTERM/SIGINT set ``stop`` (and restore the previous handlers so a
    second one acts as usual); returns a function that restores them. Main thread only."""
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handle(signum: int, frame: FrameType | None) -> None:
        logger.info(
            "%s received: finishing held jobs, then stopping (again to stop at once)",
            signal.Signals(signum).name,
            extra={"event": "stopping"},
        )
        stop.set()
        restore()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    return restore
