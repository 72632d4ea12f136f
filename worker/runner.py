"""One job from the raw assignment to the signed result to submit, with no network: check
the assignment and re-hash its inputs, run the model, hash the result, sign the attestation
and encode the outputs. The agent runs it in its inference processes; ``bench/agent.py``
measures it against onnxruntime alone.

A job is signed only after its inputs were decoded and re-hashed to the assignment's
``input_hash``; anything else is a ``Skipped`` outcome (never an exception, never signed).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy.typing as npt

from protocol.eip712 import Attestation, Domain, sign_attestation
from protocol.errors import ProtocolError
from protocol.fingerprint import Fingerprint
from protocol.hashing import result_hash
from protocol.tensors import encode
from worker.assignment import Job, parse_assignment
from worker.config import OptLevel
from worker.errors import WorkerError
from worker.inference import Checked, ModelStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Done:
    """A signed result: ``result`` is the item to submit."""

    job_id: str
    result: dict[str, Any]
    rows: int
    inference_s: float
    overhead_s: float  # checking, hashing, signing and encoding


@dataclass(frozen=True)
class Skipped:
    """A job not signed: ``code`` says why; ``trace`` is set when it was a bug of ours."""

    job_id: str | None
    code: str
    detail: str
    trace: str | None = None


Outcome = Done | Skipped


@dataclass(frozen=True)
class RunnerSpec:
    """What an inference process needs to build its runner (sent to it once, pickled)."""

    models_dir: Path
    opt_level: OptLevel
    threads: int
    key: bytes
    domain: Domain
    fingerprint: Fingerprint  # what the agent attests to; each runner checks it is its own
    max_tensor_bytes: int
    max_inputs: int


class JobRunner:
    def __init__(self, spec: RunnerSpec, store: ModelStore | None = None) -> None:
        self._store = store or ModelStore(
            spec.models_dir, opt_level=spec.opt_level, threads=spec.threads
        )
        if self._store.fingerprint() != spec.fingerprint:
            raise WorkerError(
                f"this process would run as {self._store.fingerprint()}, "
                f"the agent attests {spec.fingerprint}"
            )
        self._spec = spec
        self._fingerprint_digest = spec.fingerprint.digest()
        self._fingerprint_wire = asdict(spec.fingerprint)

    def run(self, raw: Any) -> Outcome:
        """The outcome of one raw assignment; never raises."""
        return self.run_chunk([raw])[0]

    def run_chunk(self, raws: list[Any]) -> list[Outcome]:
        """The outcomes of a chunk of raw assignments, in order; never raises. Every job is
        checked first, then run, then attested: onnxruntime's passes over the weights leave
        the caches cold, and the Python work of a chunk done in one pass runs warm."""
        outcomes: list[Outcome | None] = [None] * len(raws)
        checked: list[tuple[int, Job, Checked, float]] = []
        for i, raw in enumerate(raws):
            started = time.perf_counter()
            found = self._guard(raw, self._check, raw)
            if isinstance(found, Skipped):
                outcomes[i] = found
            else:
                checked.append((i, *found, time.perf_counter() - started))
        ran: list[tuple[int, Job, dict[str, npt.NDArray[Any]], float, float]] = []
        for i, job, ready, check_s in checked:
            started = time.perf_counter()
            outputs = self._guard(raws[i], self._store.run_checked, ready)
            if isinstance(outputs, Skipped):
                outcomes[i] = outputs
            else:
                ran.append((i, job, outputs, check_s, time.perf_counter() - started))
        for i, job, outputs, check_s, run_s in ran:
            started = time.perf_counter()
            result = self._guard(raws[i], self.attest, job, outputs)
            if isinstance(result, Skipped):
                outcomes[i] = result
            else:
                own_s = check_s + time.perf_counter() - started
                outcomes[i] = Done(job.job_id_hex, result, job.rows, run_s, own_s)
        return [o for o in outcomes if o is not None]

    def _check(self, raw: Any) -> tuple[Job, Checked]:
        job = parse_assignment(
            raw, max_tensor_bytes=self._spec.max_tensor_bytes, max_inputs=self._spec.max_inputs
        )
        return job, self._store.check(job.model_hash.hex(), job.inputs)

    @staticmethod
    def _guard(raw: Any, step: Callable[..., T], *args: Any) -> T | Skipped:
        """``step(*args)``, or the ``Skipped`` outcome of the job when it fails."""
        job_id = raw.get("job_id") if isinstance(raw, dict) else None
        job_ref = job_id if isinstance(job_id, str) else None
        try:
            return step(*args)
        except (WorkerError, ProtocolError) as exc:
            return Skipped(job_ref, exc.code, exc.detail)
        except Exception as exc:  # a bug must not stop the worker; the agent logs the trace
            return Skipped(job_ref, "internal_error", repr(exc), traceback.format_exc())

    def attest(self, job: Job, outputs: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
        """Hash the result, sign the attestation and build the item to submit."""
        digest = result_hash(job.model_hash, job.inputs, outputs, job.input_rows or None)
        attestation = Attestation(
            job.job_id, job.model_hash, job.input_hash, digest, self._fingerprint_digest
        )
        signature = sign_attestation(self._spec.domain, attestation, self._spec.key)
        return {
            "job_id": job.job_id_hex,
            "result_hash": "0x" + digest.hex(),
            "fingerprint": self._fingerprint_wire,
            "outputs": {name: encode(array) for name, array in outputs.items()},
            "signature": "0x" + signature.hex(),
        }
