"""Models on this device and the pinned onnxruntime sessions that run them.

Every session runs with the same settings (CPU provider only, sequential execution, one
inter-op thread, the configured intra-op threads and optimisation level), and every job runs
row by row at batch 1: these settings, not the batch a job happens to have, are what the
execution fingerprint promises, so replicas with equal fingerprints agree bit for bit.

A model built from a source (``"source": {"kind": "build"}`` in its manifest, minilm-l6) is
built into the model cache when its session is first needed (``worker/model_files.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from protocol.errors import ManifestError, TensorError
from protocol.fingerprint import Fingerprint, cpu_isa_tier
from protocol.manifest import Manifest, load_models
from worker.config import OptLevel
from worker.errors import (
    InferenceFailed,
    InvalidInputs,
    ModelStoreError,
    UnknownModel,
)
from worker.model_files import model_bytes

logger = logging.getLogger(__name__)

PROVIDER = "CPUExecutionProvider"
OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
ORT_LOG_ERRORS_ONLY = 3

Arrays = dict[str, npt.NDArray[Any]]


def normalise_hash(model_hash_hex: str) -> str:
    return model_hash_hex.lower().removeprefix("0x")


class ModelStore:
    """The models under ``models_dir`` (checked against their manifests' sha256 on load and
    again when a session is created) and one lazily created session per model. Built models
    live in ``cache_dir`` (default ``protocol.manifest.model_cache_dir()``)."""

    def __init__(
        self,
        models_dir: Path,
        *,
        opt_level: OptLevel = "all",
        threads: int = 1,
        cache_dir: Path | None = None,
    ) -> None:
        if not models_dir.is_dir():
            raise ModelStoreError(models_dir, "is not a directory")
        try:
            manifests = load_models(models_dir, cache_dir=cache_dir)
        except ManifestError as exc:
            raise ModelStoreError(models_dir, f"a model was refused: {exc.detail}") from exc
        except OSError as exc:
            raise ModelStoreError(models_dir, f"a model file cannot be read: {exc}") from exc
        if not manifests:
            raise ModelStoreError(models_dir, "holds no models (expected <name>/manifest.json)")
        self.models_dir = models_dir
        self.opt_level: OptLevel = opt_level
        self.threads = threads
        self._manifests = manifests
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        for key, manifest in manifests.items():
            logger.info("model %s %s (0x%s)", manifest.name, manifest.version, key)

    @property
    def manifests(self) -> Mapping[str, Manifest]:
        """Manifests keyed by model hash hex (no 0x prefix)."""
        return self._manifests

    def manifest(self, model_hash_hex: str) -> Manifest:
        key = normalise_hash(model_hash_hex)
        try:
            return self._manifests[key]
        except KeyError:
            raise UnknownModel(key) from None

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            ort=ort.__version__,
            provider=PROVIDER,
            isa=cpu_isa_tier(),
            opt_level=self.opt_level,
            threads=self.threads,
        )

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = OPT_LEVELS[self.opt_level]
        options.log_severity_level = ORT_LOG_ERRORS_ONLY
        return options

    def session(self, model_hash_hex: str) -> ort.InferenceSession:
        manifest = self.manifest(model_hash_hex)
        with self._lock:
            session = self._sessions.get(manifest.sha256)
            if session is None:
                session = self._create_session(manifest)
                self._sessions[manifest.sha256] = session
            return session

    def _create_session(self, manifest: Manifest) -> ort.InferenceSession:
        session = ort.InferenceSession(
            model_bytes(manifest), sess_options=self.session_options(), providers=[PROVIDER]
        )
        _check_signature(manifest, session)
        logger.debug("session for %s created (opt_level=%s)", manifest.name, self.opt_level)
        return session

    def check(self, model_hash_hex: str, inputs: Mapping[str, npt.NDArray[Any]]) -> Checked:
        """The inputs checked against the model's manifest (names, dtypes, shapes, ranges)."""
        manifest = self.manifest(model_hash_hex)
        try:
            rows = manifest.validate_inputs(dict(inputs))
        except TensorError as exc:
            raise InvalidInputs(manifest.sha256, exc.detail) from exc
        return Checked(manifest, dict(inputs), rows)

    def run(self, model_hash_hex: str, inputs: Mapping[str, npt.NDArray[Any]]) -> Arrays:
        """Check the inputs, run every row at batch 1 and stack the rows; outputs are those
        the manifest names."""
        return self.run_checked(self.check(model_hash_hex, inputs))

    def run_checked(self, checked: Checked) -> Arrays:
        """``run`` of inputs ``check`` passed (the agent checks a chunk of jobs, then runs it)."""
        manifest = checked.manifest
        session = self.session(manifest.sha256)
        names = [spec.name for spec in manifest.outputs]
        collected: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in names}
        for row in range(checked.rows):
            feed = {
                name: np.ascontiguousarray(array[row : row + 1])
                for name, array in checked.inputs.items()
            }
            try:
                values = session.run(names, feed)
            except Exception as exc:  # onnxruntime raises its own RuntimeError subclasses
                raise InferenceFailed(manifest.sha256, str(exc)) from exc
            for name, value in zip(names, values, strict=True):
                collected[name].append(value)
        outputs = {
            name: parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            for name, parts in collected.items()
        }
        _check_outputs(manifest, outputs)
        return outputs


@dataclass(frozen=True)
class Checked:
    """Inputs that passed ``ModelStore.check`` for ``manifest``: ``rows`` rows."""

    manifest: Manifest
    inputs: Arrays
    rows: int


def _check_signature(manifest: Manifest, session: ort.InferenceSession) -> None:
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    wanted_in = {spec.name for spec in manifest.inputs}
    wanted_out = {spec.name for spec in manifest.outputs}
    if inputs != wanted_in or not wanted_out <= outputs:
        raise ModelStoreError(
            manifest.path,
            f"takes {sorted(inputs)} and returns {sorted(outputs)}; the manifest says "
            f"{sorted(wanted_in)} and {sorted(wanted_out)}",
        )


@lru_cache(maxsize=32)
def _dtype(name: str) -> np.dtype[Any]:
    """``np.dtype(name)``, remembered: comparing dtypes is cheap, naming one is not (numpy 2
    builds a dtype's name in Python on every ``str()``)."""
    return np.dtype(name)


def _check_outputs(manifest: Manifest, outputs: Arrays) -> None:
    for spec in manifest.outputs:
        array = outputs[spec.name]
        if array.dtype != _dtype(spec.dtype) or array.ndim != len(spec.shape):
            raise InferenceFailed(
                manifest.sha256,
                f"output {spec.name} is {array.dtype}{list(array.shape)}, "
                f"the manifest says {spec.dtype}{list(spec.shape)}",
            )
