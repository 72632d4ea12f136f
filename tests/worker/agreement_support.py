"""Honest and dishonest workers over real onnxruntime sessions, and the reconciler's rule.

Used by ``test_agreement.py`` and ``bench/agreement.py`` (the models and their jobs are in
``agreement_cases.py``). A worker runs jobs through a real ``ModelStore`` (pinned sessions,
batch 1) and submits what the agent submits: the result hash over the job's own model hash
and inputs, its fingerprint's digest, and the revealed outputs in the form the API stores.
A dishonest worker serves another model file, or changes the input before running, and
still claims the job's model, input and an honest worker's fingerprint class.

Dishonest models are built at test time from the honest file with constants folded
(onnxruntime's basic level, which turns minilm-l6's int8 weights and scales into the float
weights it multiplies by; the folded model itself gives the honest bytes):

- ``perturbed(scale)``: every float initializer of more than one element (weights, biases)
  multiplied by ``1 + scale * u``, ``u`` uniform in [-1, 1] from a fixed seed: each moves by
  at most ``scale`` of its own magnitude (relative: an absolute 1e-5 is a far larger change
  on weights whose mean magnitude is 0.02 to 0.3);
- ``int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, uint8 activations);
- ``fp16``: every float initializer rounded to float16 and stored back as float32.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ledger.config import Settings
from ledger.reconcile import Tally, Vote, tally
from protocol.hashing import result_hash
from protocol.manifest import Manifest
from protocol.tensors import encode
from worker.config import OptLevel
from worker.inference import ModelStore
from worker.model_files import model_bytes

Arrays = dict[str, npt.NDArray[Any]]
Tamper = Callable[[Arrays], Arrays]
Weights = npt.NDArray[np.float32]

MAX_TENSOR_BYTES: int = Settings.model_fields["max_tensor_bytes"].default
REPLICAS: int = Settings.model_fields["replicas"].default
MAX_REPLICAS: int = Settings.model_fields["max_replicas"].default
PERTURB_SEED = 20250105


@dataclass(frozen=True)
class Setting:
    """Execution settings an honest worker may choose; each is its own fingerprint class."""

    opt_level: OptLevel
    threads: int

    @property
    def label(self) -> str:
        return f"{self.opt_level}/t{self.threads}"


# ORT_DISABLE_ALL stands in for another ISA tier on this machine (it changes the last bits
# of every row, as the tier does); threads are in the fingerprint, so 1 and 2 are classes too
HONEST_SETTINGS = (Setting("all", 1), Setting("disabled", 1), Setting("all", 2))


@dataclass(frozen=True)
class Case:
    """A model and its jobs (one row each: a dishonest worker must be caught on every row).
    The first two honest settings run every job; the third, a second session of the first
    and every dishonest worker run each ``stride``-th job (all of them when it is 1)."""

    manifest: Manifest  # loaded with ``cache`` as its model cache
    models: Path  # a models dir holding only this model
    cache: Path
    jobs: list[Arrays]
    tamper: Tamper  # the smallest change of one input a dishonest worker might make
    stride: int = 1

    @property
    def sampled(self) -> range:
        return range(0, len(self.jobs), self.stride)


@dataclass(frozen=True)
class Ballot:
    """One worker's submission for one job, as the ledger records it."""

    worker: str
    fingerprint: str  # 0x + sha256 of the canonical fingerprint
    result_hash: str  # 0x + result hash over the job's model hash and inputs
    outputs_json: str  # the revealed outputs, as ledger.work stores them
    outputs: Arrays

    @property
    def answer(self) -> tuple[str, str]:
        return (self.fingerprint, self.result_hash)


@dataclass
class Worker:
    """A worker with its own session; ``served`` is the model file it really runs."""

    name: str
    store: ModelStore
    served: str
    tamper: Tamper | None = None

    def submit(self, model_hash: bytes, inputs: Arrays) -> Ballot:
        fed = self.tamper(inputs) if self.tamper is not None else inputs
        outputs = self.store.run(self.served, fed)
        digest = result_hash(model_hash, inputs, outputs)  # the job's inputs, not those fed
        wire = {name: encode(array) for name, array in outputs.items()}
        return Ballot(
            worker=self.name,
            fingerprint="0x" + self.store.fingerprint().digest().hex(),
            result_hash="0x" + digest.hex(),
            outputs_json=json.dumps(wire, separators=(",", ":")),
            outputs=outputs,
        )

    def run(self, case: Case, jobs: Sequence[int]) -> dict[int, Ballot]:
        return {job: self.submit(case.manifest.model_hash, case.jobs[job]) for job in jobs}


# -- the reconciler's rule ------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What ``reconcile_batch`` decides for one job from ballots in assignment order."""

    accepted: bool
    tally: Tally
    ballots: tuple[Ballot, ...]  # the votes it decided on (the first ``REPLICAS``, or more)

    @property
    def agreeing(self) -> set[str]:
        return {v.worker for v in self.tally.agreeing}

    @property
    def faulted(self) -> set[str]:
        """Workers whose vote disagrees with the accepted answer (safety faults)."""
        return {b.worker for b in self.ballots} - self.agreeing if self.accepted else set()


def tally_ballots(ballots: Sequence[Ballot], tolerance: float) -> Tally:
    """``ledger.reconcile.tally`` called as ``reconcile_batch`` calls it: votes and revealed
    outputs keyed by assignment, the ledger's default tensor size limit."""
    votes = [
        Vote(assignment=i, worker=b.worker, contributor=b.worker, answer=b.answer)
        for i, b in enumerate(ballots)
    ]
    outputs: dict[int, str | None] = {i: b.outputs_json for i, b in enumerate(ballots)}
    return tally(votes, outputs, tolerance, MAX_TENSOR_BYTES)


def decide(ballots: Sequence[Ballot], tolerance: float) -> Decision:
    """The rule of ``ledger.reconcile.reconcile_batch`` without the database: the first
    ``REPLICAS`` votes; all agree, accepted; otherwise the next ballot is the replica it
    adds, up to ``MAX_REPLICAS``; then a strict majority is accepted, anything less fails."""
    available = min(len(ballots), MAX_REPLICAS)
    count = min(REPLICAS, available)
    while True:
        result = tally_ballots(ballots[:count], tolerance)
        if result.unanimous:
            return Decision(True, result, tuple(ballots[:count]))
        if count < available:
            count += 1
            continue
        return Decision(result.majority, result, tuple(ballots[:count]))


def max_abs_diff(a: Arrays, b: Arrays) -> float:
    """The largest element-wise difference over every output (float64 arithmetic)."""
    return max(
        float(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)).max()) for name in a
    )


# -- workers and dishonest models -----------------------------------------------------------


def model_dir(tmp: Path, source: Path) -> Path:
    """A models dir holding only ``source`` (linked, not copied: models may be large)."""
    root = tmp / f"models-{source.name}"
    root.mkdir(parents=True, exist_ok=True)
    link = root / source.name
    if not link.exists():
        link.symlink_to(source.resolve(), target_is_directory=True)
    return root


def _store(models: Path, cache: Path, setting: Setting) -> ModelStore:
    return ModelStore(models, opt_level=setting.opt_level, threads=setting.threads, cache_dir=cache)


def honest(case: Case, setting: Setting, name: str = "") -> Worker:
    store = _store(case.models, case.cache, setting)
    return Worker(name or f"honest {setting.label}", store, case.manifest.sha256)


def dishonest(case: Case, tmp: Path, name: str, model: bytes) -> Worker:
    """A worker serving ``model`` in place of the manifest's file, at the first setting.
    Its own models dir holds ``model`` under a copy of the manifest naming it (its
    ``ModelStore`` checks files against manifests), beside links to the model's other
    files (a tokenizer)."""
    manifest = case.manifest
    slug = name.replace(" ", "-")
    directory = tmp / f"variant-{manifest.name}-{slug}" / slug
    directory.mkdir(parents=True, exist_ok=True)
    for other in manifest.directory.iterdir():
        if other.name != "manifest.json" and not (directory / other.name).exists():
            (directory / other.name).symlink_to(other.resolve())
    (directory / "variant.onnx").write_bytes(model)
    data = json.loads((manifest.directory / "manifest.json").read_text())
    sha256 = hashlib.sha256(model).hexdigest()
    data.update(source={"kind": "file"}, file="variant.onnx", sha256=sha256)
    (directory / "manifest.json").write_text(json.dumps(data))
    store = _store(directory.parent, case.cache, HONEST_SETTINGS[0])
    return Worker(name, store, sha256)


def folded(case: Case, tmp: Path) -> Path:
    """The honest model with its constants folded (onnxruntime's basic level)."""
    out = tmp / f"{case.manifest.name}-folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(model_bytes(case.manifest), options, providers=["CPUExecutionProvider"])
    return out


def _map_weights(source: onnx.ModelProto, change: Callable[[Weights], Weights]) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(source)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 1:
            init.CopyFrom(numpy_helper.from_array(change(array).astype(np.float32), init.name))
    return bytes(model.SerializeToString())


def perturbed(source: onnx.ModelProto, scale: float, seed: int = PERTURB_SEED) -> bytes:
    rng = np.random.default_rng(seed)

    def change(weights: Weights) -> Weights:
        factor = 1 + scale * rng.uniform(-1.0, 1.0, weights.shape)
        return (weights * factor).astype(np.float32)

    return _map_weights(source, change)


def fp16(source: onnx.ModelProto) -> bytes:
    return _map_weights(source, lambda w: w.astype(np.float16).astype(np.float32))


def int8(source: Path) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = source.with_suffix(".int8.onnx")
    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8)
    return out.read_bytes()


ADVERSARIES = ("perturbed 1e-3", "perturbed 1e-5", "int8", "fp16", "changed input")


def adversaries(case: Case, tmp: Path) -> list[Worker]:
    """Every dishonest worker, each claiming the honest class ``all/t1``."""
    path = folded(case, tmp)
    source = onnx.load(str(path))
    changed = replace(honest(case, HONEST_SETTINGS[0]), name="changed input", tamper=case.tamper)
    return [
        dishonest(case, tmp, "perturbed 1e-3", perturbed(source, 1e-3)),
        dishonest(case, tmp, "perturbed 1e-5", perturbed(source, 1e-5)),
        dishonest(case, tmp, "int8", int8(path)),
        dishonest(case, tmp, "fp16", fp16(source)),
        changed,
    ]


# -- every worker on every job ----------------------------------------------------------------


@dataclass
class Runs:
    """Every worker's ballots, by job index, on the jobs it ran."""

    case: Case
    honest: dict[str, dict[int, Ballot]]  # by worker name, one per honest setting
    twin: dict[int, Ballot]  # a second session of the first setting
    dishonest: dict[str, dict[int, Ballot]]

    @property
    def tolerance(self) -> float:
        return self.case.manifest.tolerance_abs


def run_case(case: Case, tmp: Path) -> Runs:
    """Every honest setting, a twin session and every dishonest worker on their jobs."""
    every = range(len(case.jobs))
    workers = [honest(case, s) for s in HONEST_SETTINGS]
    twin = honest(case, HONEST_SETTINGS[0], "twin " + workers[0].name)
    return Runs(
        case,
        {w.name: w.run(case, every if i < 2 else case.sampled) for i, w in enumerate(workers)},
        twin.run(case, case.sampled),
        {w.name: w.run(case, case.sampled) for w in adversaries(case, tmp)},
    )


def honest_spread(runs: Runs) -> dict[str, float]:
    """The largest difference between two honest settings over their common jobs, per pair."""
    return {
        f"{a} vs {b}": max(
            max_abs_diff(ballot.outputs, runs.honest[b][job].outputs)
            for job, ballot in runs.honest[a].items()
            if job in runs.honest[b]
        )
        for a, b in itertools.combinations(runs.honest, 2)
    }


def closest_approach(runs: Runs, adversary: str) -> float:
    """The smallest difference of a dishonest worker from any honest setting on any job."""
    return min(
        max_abs_diff(cheat.outputs, fair[job].outputs)
        for fair in runs.honest.values()
        for job, cheat in runs.dishonest[adversary].items()
    )
