"""The worker loop: pull assignments, check them, run them, attest, submit.

A job is signed only after its inputs were decoded and re-hashed to the assignment's
``input_hash``; anything else is skipped (logged and counted, never signed). Results of one
pull go back in one POST. When the stop event is set the agent finishes the jobs it holds,
submits them (retrying for at most ``shutdown_grace_s``) and returns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy.typing as npt
from eth_account.signers.local import LocalAccount

from protocol.contracts import Deployment
from protocol.eip712 import Attestation, Domain, sign_attestation
from protocol.errors import ProtocolError
from protocol.hashing import result_hash
from protocol.tensors import encode
from worker.api_client import ApiClient, SubmitStatus
from worker.assignment import Job, parse_assignment
from worker.config import WorkerSettings
from worker.errors import ApiError, ApiUnavailable, AuthRefused, WorkerError
from worker.inference import ModelStore
from worker.retry import Backoff, Grace
from worker.stats import Stats

logger = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        settings: WorkerSettings,
        account: LocalAccount,
        store: ModelStore,
        client: ApiClient,
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        self._account = account
        self._store = store
        self._client = client
        self.fingerprint = store.fingerprint()
        self._fingerprint_digest = self.fingerprint.digest()
        self._fingerprint_wire = asdict(self.fingerprint)
        self.deployment: Deployment | None = None
        self._domain: Domain | None = None

    def run(self, stop: threading.Event) -> Stats:
        """Work until ``stop`` is set; returns the counters. Raises ``AuthRefused`` when the
        API refuses this worker's sign-in (nothing else in the loop is fatal)."""
        logger.info(
            "worker %s starting",
            self._account.address,
            extra={"event": "start", "fingerprint": self._fingerprint_wire},
        )
        if not self._connect(stop):
            return self._finish()
        idle = Backoff(self.settings.poll_interval_s, self.settings.max_idle_sleep_s, lambda: 1.0)
        errors = Backoff(self.settings.backoff_initial_s, self.settings.max_backoff_s)
        last_stats = time.monotonic()
        while not stop.is_set():
            try:
                worked = self._cycle(stop)
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
            if worked:
                idle.reset()
            else:
                stop.wait(idle.next_delay())
            if time.monotonic() - last_stats >= self.settings.stats_interval_s:
                last_stats = time.monotonic()
                logger.info(self.stats.line(), extra={"event": "stats", **self.stats.as_dict()})
        return self._finish()

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
        self._domain = self.deployment.registry_domain
        logger.info(
            "attesting for chain %d, registry %s",
            self.deployment.chain_id,
            self.deployment.registry,
            extra={"event": "connected"},
        )
        return True

    def _finish(self) -> Stats:
        logger.info(
            "worker stopped: %s", self.stats.line(), extra={"event": "stop", **self.stats.as_dict()}
        )
        return self.stats

    def _cycle(self, stop: threading.Event) -> bool:
        """One pull, the work on it and one submit; False when there was nothing to do."""
        assignments = self._client.pull(self.settings.pull_batch, stop)
        if not assignments:
            return False
        self.stats.pulled += len(assignments)
        results = [r for r in (self.process(raw) for raw in assignments) if r is not None]
        if results:
            self._submit(results, Grace(stop, self.settings.shutdown_grace_s))
        return True

    def process(self, raw: Any) -> dict[str, Any] | None:
        """The signed result of one raw assignment, or None when it was skipped."""
        started = time.perf_counter()
        job_id = raw.get("job_id") if isinstance(raw, dict) else None
        try:
            job = parse_assignment(
                raw,
                max_tensor_bytes=self.settings.max_tensor_bytes,
                max_inputs=self.settings.max_inputs_per_job,
            )
            checked = time.perf_counter()
            outputs = self._store.run(job.model_hash.hex(), job.inputs)
            ran = time.perf_counter()
            result = self.attest(job, outputs)
        except (WorkerError, ProtocolError) as exc:
            self._skip(job_id, exc.code, exc.detail)
            return None
        except Exception as exc:  # a bug must not stop the worker; it is logged with a trace
            logger.exception("unexpected failure on job %s", job_id)
            self._skip(job_id, "internal_error", repr(exc))
            return None
        self.stats.signed += 1
        self.stats.rows += job.rows
        self.stats.inference_s += ran - checked
        self.stats.overhead_s += (checked - started) + (time.perf_counter() - ran)
        return result

    def attest(self, job: Job, outputs: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
        """Hash the result, sign the attestation and build the wire result."""
        if self._domain is None:
            raise RuntimeError("attest() before the agent connected")
        digest = result_hash(job.model_hash, job.inputs, outputs)
        attestation = Attestation(
            job.job_id, job.model_hash, job.input_hash, digest, self._fingerprint_digest
        )
        signature = sign_attestation(self._domain, attestation, bytes(self._account.key))
        return {
            "job_id": job.job_id_hex,
            "result_hash": "0x" + digest.hex(),
            "fingerprint": self._fingerprint_wire,
            "outputs": {name: encode(array) for name, array in outputs.items()},
            "signature": "0x" + signature.hex(),
        }

    def _skip(self, job_id: object, code: str, detail: str) -> None:
        self.stats.errors += 1
        logger.warning(
            "skipped job %s: %s: %s",
            job_id,
            code,
            detail,
            extra={"event": "skipped", "job_id": str(job_id), "code": code},
        )

    def _submit(self, results: list[dict[str, Any]], cancel: Grace) -> None:
        try:
            statuses = self._client.submit(results, cancel)
        except AuthRefused:
            raise
        except ApiError as exc:
            self.stats.errors += len(results)
            self.stats.api_errors += 1
            logger.error(
                "could not submit %d results: %s",
                len(results),
                exc,
                extra={"event": "submit_failed", "code": exc.error},
            )
            return
        self._count(results, statuses)

    def _count(self, results: list[dict[str, Any]], statuses: list[SubmitStatus]) -> None:
        by_id = {s.job_id: s for s in statuses}
        for result in results:
            job_id = result["job_id"]
            status = by_id.get(job_id)
            if status is None:
                self.stats.errors += 1
                logger.warning("no status for job %s in the answer", job_id)
            elif status.accepted:
                self.stats.add_done()
            else:
                self.stats.refused += 1
                logger.warning(
                    "job %s refused: %s: %s",
                    job_id,
                    status.error,
                    status.detail,
                    extra={"event": "refused", "job_id": job_id, "code": status.error},
                )
        logger.debug("submitted %d results", len(results), extra={"event": "submitted"})
