"""The inference pool: where jobs run while the agent's own thread talks to the API.

``workers`` = 1 runs one ``JobRunner`` on one thread of this process. More run one runner
per process (spawned, so no lock or onnxruntime thread pool is inherited half-held), each
with its own onnxruntime session at the fingerprint's settings: every replica computes
exactly what the fingerprint promises, and the pool scales over cores for the whole per-job
path (decoding, hashing and signing are Python and would share one core as threads).

Inference processes ignore SIGINT (a Ctrl-C reaches the whole process group, and the agent,
not the signal, decides when they stop). On SIGTERM (a service manager's, to the group, or
the executor's own when it shuts a broken pool down) a process finishes the chunk it holds,
sends it back, and exits; an idle one exits at once. It never outlives the agent: on Linux
the kernel kills it when the agent dies (PR_SET_PDEATHSIG). A process that dies (a crash
in onnxruntime, the OOM killer) breaks the pool: the agent hands back what it was running
and starts a new pool.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

from worker.errors import PoolFailed
from worker.runner import JobRunner, Outcome, RunnerSpec

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 120.0  # spawning imports onnxruntime and numpy in each process
_runner: JobRunner | None = None  # the runner of this inference process


_busy = False  # this inference process is running a chunk
RESULT_SEND_S = 1.0  # after its last chunk, time for the result to reach the agent


def _exit_when_idle() -> None:
    while _busy:
        time.sleep(0.02)
    time.sleep(RESULT_SEND_S)
    os._exit(0)


def _on_sigterm(_signum: int, _frame: object) -> None:
    if not _busy:
        os._exit(0)  # nothing in hand
    threading.Thread(target=_exit_when_idle, daemon=True).start()


def _die_with_agent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        pass
    agent = multiprocessing.parent_process()
    if agent is not None and os.getppid() != agent.pid:  # it died before the prctl
        os._exit(0)


def _start_process(spec: RunnerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with_agent()
    global _runner
    _runner = JobRunner(spec)


def _started() -> int:
    return os.getpid()


def _run_in_process(raws: list[Any]) -> list[Outcome]:
    global _busy
    if _runner is None:  # the initializer failed; the pool reports it as broken
        raise RuntimeError("inference process without a runner")
    _busy = True
    try:
        return _runner.run_chunk(raws)
    finally:
        _busy = False


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
            # no public way before Python 3.14 (terminate_workers); SIGKILL, as SIGTERM
            # lets them finish their chunk
            processes = getattr(self._executor, "_processes", None) or {}
            for process in list(processes.values()):
                if process.is_alive():
                    process.kill()
        self._executor.shutdown(wait=True)
