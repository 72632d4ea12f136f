"""The agent: pull assignments, run them in the inference pool, submit the signed results,
hand back what it will not answer, and tell the API it is alive.

The caller's thread talks to the API while the pool computes, so the network does not idle
the cores: the agent holds up to ``held_limit()`` assignments (queued, running, or waiting to
be submitted), pulls more whenever there is room for a batch, and submits finished results in
batches of ``submit_batch`` (after ``submit_linger_s`` at most, at once when nothing else
runs). A heartbeat goes out every ``heartbeat_interval_s`` whatever the agent is doing.

Skipped assignments (malformed, an unknown model, inputs that do not hash to the assignment,
a failed inference) are counted, never signed, and handed back so that another contributor's
worker runs them. On stop, jobs not yet started are handed back at once; running ones may
take two thirds of ``shutdown_grace_s`` to finish, and the rest of the grace goes to
submitting results and handing back whatever is left. The exchanges other than pulling are
the ``Courier``'s (``worker/courier.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from dataclasses import asdict
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount

from protocol.contracts import Deployment
from worker.api_client import ApiClient
from worker.config import WorkerSettings
from worker.courier import Courier, by_size
from worker.errors import ApiError, ApiUnavailable, AuthRefused
from worker.holdings import Holdings, job_key
from worker.inference import ModelStore
from worker.pool import Pool
from worker.retry import Backoff, Grace
from worker.runner import Done, JobRunner, RunnerSpec, Skipped
from worker.stats import Stats

logger = logging.getLogger(__name__)

MAX_WAIT_S = 0.25  # the loop looks at the stop event at least this often
RUN_SHARE_OF_GRACE = 2 / 3  # on stop, the part of the grace running jobs may take
MAX_CHUNK = 16  # jobs given to an inference process at once (see JobRunner.run_chunk)
T = TypeVar("T")


def chunks(items: list[T], workers: int) -> list[list[T]]:
    """``items`` in order, cut into chunks of at most ``MAX_CHUNK``, enough of them to give
    each of ``workers`` one when there are that many items."""
    size = max(1, min(MAX_CHUNK, -(-len(items) // max(1, workers))))
    return [items[i : i + size] for i in range(0, len(items), size)]


class Agent:
    def __init__(
        self,
        settings: WorkerSettings,
        account: LocalAccount,
        store: ModelStore,
        client: ApiClient,
    ) -> None:
        self.settings = settings
        self.stats = Stats(workers=settings.pool_size())
        self.fingerprint = store.fingerprint()
        self.deployment: Deployment | None = None
        self._account = account
        self._store = store
        self._client = client
        self._held = Holdings()
        self._long_polled = False  # the last pull waited at the API for work
        self._drained = False  # the last pull got fewer new assignments than it asked for
        self._courier = Courier(settings, client, self._held, self.stats)
        self._pool: Pool | None = None
        self._stopping = False

    def run(self, stop: threading.Event) -> Stats:
        """Work until ``stop`` is set; returns the counters. Raises ``AuthRefused`` when the
        API refuses this worker's sign-in (nothing else in the loop is fatal)."""
        logger.info(
            "worker %s starting with %d inference %s",
            self._account.address,
            self.stats.workers,
            "thread" if self.stats.workers == 1 else "processes",
            extra={"event": "start", "fingerprint": asdict(self.fingerprint)},
        )
        if not self._connect(stop):
            return self._finish()
        self._pool = self._new_pool()
        clean = False
        try:
            self._loop(stop)
            self._wind_down(stop)
            clean = True
        finally:
            self._pool.close(kill=not clean)
        return self._finish()

    def spec(self) -> RunnerSpec:
        """What each inference process is built from (after ``_connect``)."""
        if self.deployment is None:
            raise RuntimeError("spec() before the agent connected")
        return RunnerSpec(
            models_dir=self.settings.models_dir,
            opt_level=self.settings.opt_level,
            threads=self.settings.threads,
            key=bytes(self._account.key),
            domain=self.deployment.registry_domain,
            fingerprint=self.fingerprint,
            max_tensor_bytes=self.settings.max_tensor_bytes,
            max_inputs=self.settings.max_inputs_per_job,
        )

    # --- connecting and the loop -----------------------------------------------------------

    def _connect(self, stop: threading.Event) -> bool:
        """Read the deployment and sign in, retrying API errors; False if stopped first."""
        errors = Backoff(self.settings.backoff_initial_s, self.settings.max_backoff_s)
        while True:
            try:
                self.deployment = self._client.chain(stop)
                self._client.sign_in(stop)
                break
            except ApiUnavailable:
                logger.info("stopped before the API answered")
                return False
            except AuthRefused:
                raise
            except ApiError as exc:
                self.stats.api_errors += 1
                logger.error("API error while connecting: %s", exc, extra={"event": "api_error"})
                if stop.wait(errors.next_delay()):
                    return False
        logger.info(
            "attesting for chain %d, registry %s",
            self.deployment.chain_id,
            self.deployment.registry,
            extra={"event": "connected"},
        )
        return True

    def _new_pool(self) -> Pool:
        spec = self.spec()
        size = self.stats.workers
        return Pool(spec, size, JobRunner(spec, self._store) if size == 1 else None)

    def _loop(self, stop: threading.Event) -> None:
        errors = Backoff(self.settings.backoff_initial_s, self.settings.max_backoff_s)
        idle = Backoff(self.settings.poll_interval_s, self.settings.max_idle_sleep_s, lambda: 1.0)
        next_pull = last_stats = time.monotonic()
        holding = False
        while not stop.is_set():
            try:
                self._collect()
                got = self._submit_then_pull(stop)
                self._courier.flush(Grace(stop, self.settings.shutdown_grace_s), force=False)
                if holding and not self._held.count():  # all done: wait for work at once
                    next_pull = min(next_pull, time.monotonic())
                self._courier.beat(stop)
                if got is None and time.monotonic() >= next_pull and self._pull_due():
                    got = self._pull(stop)
                if got:
                    idle.reset()
                    if self._drained:  # the API had no more: not asked again at once
                        next_pull = time.monotonic() + idle.next_delay()
                elif got is not None and not self._long_polled:  # a long poll waited already
                    next_pull = time.monotonic() + idle.next_delay()
                holding = self._held.count() > 0
                errors.reset()
            except AuthRefused:
                raise
            except ApiUnavailable:
                break  # only raised once stop was set
            except ApiError as exc:
                self.stats.api_errors += 1
                logger.error("API error: %s", exc, extra={"event": "api_error", "code": exc.error})
                stop.wait(errors.next_delay())
                continue
            if stop.is_set():
                break  # at once: what has not started yet is still cancellable
            self._wait(stop, next_pull)
            if time.monotonic() - last_stats >= self.settings.stats_interval_s:
                last_stats = time.monotonic()
                logger.info(self.stats.line(), extra={"event": "stats", **self.stats.as_dict()})

    def _wait(self, stop: threading.Event, next_pull: float) -> None:
        """Until a job finishes, or the next pull, submission or heartbeat is due."""
        due = [self._courier.next_beat]
        if self._pull_due():
            due.append(next_pull)
        if self._held.ready_since is not None:
            due.append(self._held.ready_since + self.settings.submit_linger_s)
        timeout = min(max(0.0, min(due) - time.monotonic()), MAX_WAIT_S)
        if self._held.running:
            futures.wait(list(self._held.running), timeout, futures.FIRST_COMPLETED)
        elif timeout > 0:
            stop.wait(timeout)

    # --- pulling and running ---------------------------------------------------------------

    def _pull_due(self) -> bool:
        """Room for a batch (or for anything, when nothing is held)."""
        limit, held = self.settings.held_limit(), self._held.count()
        room = limit - held
        return room >= min(self.settings.pull_batch, max(1, limit // 2)) or (held == 0)

    def _submit_then_pull(self, stop: threading.Event) -> bool | None:
        """Where everything held is an answer and they fit one submission, submit them and
        wait for the next work in one exchange (``POST /v1/work/results?max=&wait_s=``):
        the pull that would follow at once, without a request of its own. None where that
        does not apply or nothing was pulled (the loop goes on as usual); else whether new
        work came."""
        held = self._held
        if held.running or held.to_release or not held.ready or self._stopping:
            return None
        size = len(held.ready)
        if size > self.settings.submit_batch:
            return None
        if len(by_size(held.ready, self.settings.submit_max_bytes)) != 1:
            return None
        want = min(self.settings.pull_batch, self.settings.held_limit())
        if want <= 0:
            return None
        wait_s = self._long_poll_s()
        asked = time.monotonic()
        grace = Grace(stop, self.settings.shutdown_grace_s)
        answer = self._courier.submit_and_pull(held.take_ready(size), want, wait_s, grace)
        if answer is None:
            return None
        return self._take(answer, want, wait_s, asked)

    def _pull(self, stop: threading.Event) -> bool:
        """Pull and start the new assignments; False when none were new. Held ones come back
        in the answer (the API delivers until answered), so the request asks for them too."""
        held = self._held.count()
        want = min(self.settings.pull_batch, self.settings.held_limit() - held)
        if want <= 0:
            return False
        wait_s = self._long_poll_s() if held == 0 else 0.0  # idle: the API answers when work comes
        asked = time.monotonic()
        return self._take(self._client.pull(held + want, stop, wait_s), want, wait_s, asked)

    def _take(self, answer: list[Any], want: int, wait_s: float, asked: float) -> bool:
        """Start the new assignments of a pull's ``answer`` (at most ``want``); False when
        none were new."""
        if self._pool is None:
            raise RuntimeError("_take() without a pool")
        new: list[tuple[str, Any]] = []
        seen: set[str] = set()  # an answer may name a job twice
        # an empty answer long before the wait ran out: an API that does not hold pulls (or
        # cut the wait short); the idle sleeps stand in, never a loop of pulls
        self._long_polled = wait_s > 0 and time.monotonic() - asked >= wait_s / 2
        for raw in answer:
            key, has_id = job_key(raw)
            if len(new) >= want or key in seen or self._held.holds(key):
                continue
            seen.add(key)
            self.stats.pulled += 1
            if not has_id:  # cannot be run, nor handed back without an id
                self._held.ignore(key)
                self._skip(Skipped(None, "malformed_assignment", "no well-formed job_id"))
                continue
            new.append((key, raw))
        self._drained = len(new) < want
        for chunk in chunks(new, self._pool.size):
            self._start([key for key, _ in chunk], [raw for _, raw in chunk])
        self.stats.held = self._held.count()
        return bool(new)

    def _long_poll_s(self) -> float:
        """How long an idle pull may wait at the API: ``long_poll_s``, cut short for the next
        heartbeat (none under 50 ms: that pull asks and the agent sleeps instead)."""
        left = min(self.settings.long_poll_s, self._courier.next_beat - time.monotonic())
        return left if left >= 0.05 else 0.0

    def _start(self, keys: list[str], raws: list[Any]) -> None:
        if self._pool is None:
            raise RuntimeError("_start() without a pool")
        try:
            future = self._pool.submit(raws)
        except futures.BrokenExecutor:  # a process died while the pool was idle
            self._restart_pool()
            future = self._pool.submit(raws)
        self._held.start(future, keys)

    def _collect(self) -> None:
        """Take the outcomes of finished chunks; a dead inference process restarts the pool."""
        broken = False
        for future in [f for f in self._held.running if f.done()]:
            keys = self._held.finish(future)
            if future.cancelled():
                continue
            try:
                outcomes = future.result()
            except Exception as exc:  # BrokenProcessPool: a process died under these jobs
                broken = True
                self._lose(keys)
                logger.error(
                    "%d jobs lost with their inference process: %r",
                    len(keys),
                    exc,
                    extra={"event": "pool_broken", "jobs": keys},
                )
                continue
            for key, outcome in zip(keys, outcomes, strict=True):
                if isinstance(outcome, Done):
                    self.stats.add_signed(outcome.rows, outcome.inference_s, outcome.overhead_s)
                    self._held.add_ready(key, outcome.result)
                else:
                    self._held.hand_back(key)
                    self._skip(outcome)
        self.stats.held = self._held.count()
        if broken and not self._stopping:
            self._restart_pool()

    def _lose(self, keys: list[str]) -> None:
        """Jobs that will not be answered here (their process died): errors, handed back."""
        self.stats.errors += len(keys)
        for key in keys:
            self._held.hand_back(key)

    def pool_pids(self) -> list[int]:
        """The inference processes' ids (none while stopped, or with a single thread)."""
        return self._pool.pids() if self._pool is not None else []

    def _restart_pool(self) -> None:
        lost = [key for future in list(self._held.running) for key in self._held.finish(future)]
        self._lose(lost)  # they failed with the pool, or will
        if self._pool is not None:
            self._pool.close(kill=True)
        self._pool = self._new_pool()
        logger.warning(
            "an inference process died: pool restarted, %d more jobs handed back",
            len(lost),
            extra={"event": "pool_restarted", "lost": len(lost)},
        )

    def _skip(self, skipped: Skipped) -> None:
        self.stats.errors += 1
        log = logger.error if skipped.trace else logger.warning
        log(
            "skipped job %s: %s: %s%s",
            skipped.job_id,
            skipped.code,
            skipped.detail,
            "\n" + skipped.trace if skipped.trace else "",
            extra={"event": "skipped", "job_id": str(skipped.job_id), "code": skipped.code},
        )

    # --- stopping --------------------------------------------------------------------------

    def _wind_down(self, stop: threading.Event) -> None:
        """Hand back what has not started, let running jobs finish, submit, hand back the
        rest; all within ``shutdown_grace_s``."""
        self._stopping = self._courier.stopping = True
        grace = Grace(stop, self.settings.shutdown_grace_s)
        grace.is_set()  # the grace starts now
        for future in list(self._held.running):
            if future.cancel():
                for key in self._held.finish(future):
                    self._held.hand_back(key)
        logger.info(
            "stopping: %d jobs running, %d results to submit, %d to hand back",
            sum(len(keys) for keys in self._held.running.values()),
            len(self._held.ready),
            len(self._held.to_release),
            extra={"event": "winding_down"},
        )
        until = time.monotonic() + self.settings.shutdown_grace_s * RUN_SHARE_OF_GRACE
        while self._held.running and time.monotonic() < until:
            timeout = min(MAX_WAIT_S, max(0.0, until - time.monotonic()))
            futures.wait(list(self._held.running), timeout, futures.FIRST_COMPLETED)
            self._collect()
        for future in list(self._held.running):  # out of time
            for key in self._held.finish(future):
                self._held.hand_back(key)
        try:
            self._courier.flush(grace, force=True)
        except ApiError as exc:  # the grace ran out; the deadlines hand the jobs on
            logger.error("could not finish handing over: %s", exc, extra={"event": "api_error"})

    def _finish(self) -> Stats:
        logger.info(
            "worker stopped: %s", self.stats.line(), extra={"event": "stop", **self.stats.as_dict()}
        )
        return self.stats
