"""The live status line shown while the worker runs attached to a terminal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.text import Text

from worker.stats import Stats

logger = logging.getLogger(__name__)

REFRESH_PER_S = 4


@contextmanager
def live_status(console: Console, stats: Stats, *, label: str, enabled: bool) -> Iterator[None]:
    """Show ``stats.line()`` refreshed in place below the logs while the block runs."""
    if not enabled:
        yield
        return

    def render() -> Text:
        return Text.assemble((label, "bold cyan"), " ", stats.line())

    with Live(
        get_renderable=render,
        console=console,
        refresh_per_second=REFRESH_PER_S,
        transient=True,
        redirect_stderr=False,
    ):
        yield
