"""``inferledger audit --replay``'s part of the command line: the jobs' inputs from the API,
a progress bar, and a summary line (the faults are printed with the audit's)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import Progress

from inferledger.audit import AuditReport
from inferledger.audit_replay import Replayer, ReplaySummary
from worker.errors import WorkerError

INPUTS_TIMEOUT_S = 30.0  # per read; a job's whole fetch gets INPUTS_DEADLINE_S
INPUTS_DEADLINE_S = 120.0
INPUTS_MAX_BYTES = 64 << 20  # a job's inputs body: above any the API accepts (1 MiB)
console = Console()


def run_replay(
    report: AuditReport,
    documents: dict[int, dict[str, Any]],
    api_url: str,
    models_dir: Path,
    count: int,
    seed: int,
    *,
    quiet: bool,
) -> None:
    """Replay ``count`` random jobs of the audited files into ``report``; ``quiet`` prints
    nothing (``--json``). A models dir the worker's code refuses is a usage error (2)."""
    with httpx.Client(base_url=api_url, timeout=INPUTS_TIMEOUT_S) as http:

        def fetch_inputs(n: int, job_id: str) -> bytes:
            """The body, read with a cap on its size and on the whole fetch's time: the
            API is not trusted, a slow or endless answer is the job's replay_inputs fault."""
            deadline = time.monotonic() + INPUTS_DEADLINE_S
            body = bytearray()
            with http.stream("GET", f"/v1/epochs/{n}/jobs/{job_id}/inputs") as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > INPUTS_MAX_BYTES:
                        raise ValueError(f"the answer is over {INPUTS_MAX_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the answer took over {INPUTS_DEADLINE_S:g} s")
            return bytes(body)

        try:
            replayer = Replayer(fetch_inputs, models_dir)
        except WorkerError as exc:
            console.print(f"[red]--replay cannot load the models:[/red] {exc}")
            raise typer.Exit(2) from None
        summary, picked = replayer.pick(documents, count, seed)
        if quiet:
            replayer.run(report, summary, picked)
            return
        _print_plan(summary, len(picked))
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("replaying", total=len(picked))
            replayer.run(report, summary, picked, lambda _: bar.advance(task))
        console.print(
            f"replayed {len(summary.jobs)} jobs: {summary.count('agrees')} agree, "
            f"{len(summary.jobs) - summary.count('agrees')} do not"
        )


def _print_plan(summary: ReplaySummary, picked: int) -> None:
    own = summary.runs_as
    console.print(
        f"replay: {picked} of {summary.comparable} comparable jobs ({summary.accepted} "
        f"accepted), seed {summary.seed}; this machine runs onnxruntime {own['ort']} "
        f"{own['provider']} {own['isa']}"
    )
    if summary.accepted and not summary.comparable:
        console.print(
            "[red]not one accepted job can be compared here[/red]: the audit fails "
            "(replay_coverage); replay on a machine that runs their fingerprint class"
        )
    elif summary.comparable < summary.accepted:
        console.print(
            f"[yellow]{summary.accepted - summary.comparable} accepted jobs cannot be compared "
            "here[/yellow] (their consensus is in a fingerprint class this machine cannot run, "
            "and the file reveals no outputs of it)"
        )
