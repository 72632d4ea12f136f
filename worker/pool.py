"""The inference pool: where jobs run while the agent's own thread talks to the API.

``workers`` = 1 runs one ``JobRunner`` on one thread of this process. More run one runner
per process (spawned, so no lock or onnxruntime thread pool is inherited half-held), each
with its own onnxruntime session at the fingerprint's settings: every replica computes
exactly what the fingerprint promises, and the pool scales over cores for the whole per-job
path (decoding, hashing and signing are Python and would share one core as threads).

Inference processes ignore SIGINT and SIGTERM: a Ctrl-C or a service manager's SIGTERM
reaches the whole process group, and the agent, not the signal, decides when they stop.
A process that dies (a crash in onnxruntime, the OOM killer) breaks the pool: the agent
hands back what it was running and starts a new pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

from worker.errors import PoolFailed
from worker.runner import JobRunner, Outcome, RunnerSpec

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # spawning imports onnxruntime and numpy in each process
_runner: JobRunner | None = None  # the runner of this inference process


def _start_process(spec: RunnerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _runner
    _runner = JobRunner(spec)


def _started() -> int:
    return os.getpid()


def _run_in_process(raws: list[Any]) -> list[Outcome]:
    if _runner is None:  # the initializer failed; the pool reports it as broken
        raise RuntimeError("inference process without a runner")
    return _runner.run_chunk(raws)


class Pool:
    """``size`` runners fed chunks of assignments through ``submit``; ``close`` ends them."""

    def __init__(self, spec: RunnerSpec, size: int, runner: JobRunner | None = None) -> None:
        self.size = size
        self._executor: Executor
        if size == 1:
            local = runner or JobRunner(spec)
            self._local: JobRunner | None = local
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        else:
            self._local = None
            self._executor = ProcessPoolExecutor(
                size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process,
                initargs=(spec,),
            )
            self._start_all(size)

    def _start_all(self, size: int) -> None:
        """Start every process now (the executor would start them as work comes), so that
        the device's pool is what it says from the first job, and a runner that cannot be
        built fails here."""
        started = [self._executor.submit(_started) for _ in range(size)]  # each spawns one
        try:
            wait(started, timeout=START_TIMEOUT_S)
            for future in started:
                future.result(timeout=0)
        except Exception as exc:  # BrokenProcessPool (the initializer raised), a timeout
            self.close(kill=True)
            raise PoolFailed(f"the inference processes did not start: {exc!r}") from exc
        logger.info("%d inference processes started: %s", size, self.pids())

    @property
    def in_process(self) -> bool:
        return self._local is not None

    def pids(self) -> list[int]:
        """The inference processes' ids (none when the pool runs in this process)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(p.pid for p in processes.values() if p.pid is not None and p.is_alive())

    def submit(self, raws: list[Any]) -> Future[list[Outcome]]:
        """Run a chunk of raw assignments (``JobRunner.run_chunk``). Raises
        ``concurrent.futures.BrokenExecutor`` once a process of the pool died."""
        if self._local is not None:
            return self._executor.submit(self._local.run_chunk, raws)
        return self._executor.submit(_run_in_process, raws)

    def close(self, *, kill: bool) -> None:
        """Stop taking work; ``kill`` also ends running jobs at once (processes only: a
        thread cannot be stopped, but it runs one job at most)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if kill and isinstance(self._executor, ProcessPoolExecutor):
            # no public way before Python 3.14 (terminate_workers); SIGKILL, as they
            # ignore SIGTERM
            processes = getattr(self._executor, "_processes", None) or {}
            for process in list(processes.values()):
                if process.is_alive():
                    process.kill()
        self._executor.shutdown(wait=True)
