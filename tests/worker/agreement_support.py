"""Honest and dishonest workers over real onnxruntime sessions, and the reconciler's rule.

Used by ``test_agreement.py`` and ``bench/agreement.py``. A worker runs jobs through a real
``ModelStore`` (pinned sessions, batch 1) and submits what the agent submits: the result
hash over the job's own model hash and inputs, its fingerprint's digest, and the revealed
outputs in the form the API stores them. A dishonest worker serves another model file or
changes the input before running, and still claims the job's model and input.

Variants of a model are built at test time with the ``onnx`` package:

- ``perturbed(scale)``: every float initializer of more than one element (weights and
  biases) multiplied by ``1 + scale * u``, ``u`` uniform in [-1, 1] from a fixed seed, so
  each weight moves by at most ``scale`` of its own magnitude (relative, not absolute: an
  absolute 1e-5 on weights of mean magnitude ~0.04 to 0.3 is a far larger change);
- ``int8``: ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights);
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
from onnx import numpy_helper

from ledger.config import Settings
from ledger.reconcile import Tally, Vote, tally
from protocol.hashing import result_hash
from protocol.manifest import Manifest, load_manifest
from protocol.tensors import encode
from worker.config import OptLevel
from worker.inference import ModelStore

Arrays = dict[str, npt.NDArray[Any]]
Tamper = Callable[[Arrays], Arrays]

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


@dataclass(frozen=True)
class Decision:
    """What ``reconcile_batch`` decides for one job from ballots in assignment order."""

    accepted: bool
    tally: Tally
    ballots: tuple[Ballot, ...]  # the votes it decided on (the first ``replicas``, or more)

    @property
    def agreeing(self) -> set[str]:
        return {v.worker for v in self.tally.agreeing}

    @property
    def faulted(self) -> set[str]:
        """Workers whose vote disagrees with the accepted answer (safety faults)."""
        return {b.worker for b in self.ballots} - self.agreeing if self.accepted else set()


def tally_ballots(ballots: Sequence[Ballot], tolerance: float) -> Tally:
    """``ledger.reconcile.tally`` called as ``reconcile_batch`` calls it: votes keyed by
    assignment, revealed outputs by assignment, the ledger's default tensor size limit."""
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


# -- models and their variants ------------------------------------------------------------


def model_dir(tmp: Path, source: Path) -> Path:
    """A models dir holding only ``source`` (linked, not copied: models may be large)."""
    root = tmp / f"models-{source.name}"
    root.mkdir(parents=True, exist_ok=True)
    link = root / source.name
    if not link.exists():
        link.symlink_to(source.resolve(), target_is_directory=True)
    return root


def honest(models: Path, manifest: Manifest, setting: Setting, name: str = "") -> Worker:
    store = ModelStore(models, opt_level=setting.opt_level, threads=setting.threads)
    return Worker(name or f"honest {setting.label}", store, manifest.sha256)


def variant_dir(tmp: Path, manifest: Manifest, name: str, model: bytes) -> Path:
    """A models dir with ``model`` under a copy of ``manifest`` naming it, for a dishonest
    worker's own ``ModelStore`` (which checks its files against their manifests)."""
    root = tmp / f"variant-{manifest.name}-{name}"
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "model.onnx").write_bytes(model)
    data = json.loads((manifest.path.parent / "manifest.json").read_text())
    data.update(file="model.onnx", sha256=hashlib.sha256(model).hexdigest())
    (root / name / "manifest.json").write_text(json.dumps(data))
    return root


def dishonest(
    tmp: Path, manifest: Manifest, name: str, model: bytes, setting: Setting = HONEST_SETTINGS[0]
) -> Worker:
    """A worker serving ``model`` in place of the manifest's file."""
    root = variant_dir(tmp, manifest, name.replace(" ", "-"), model)
    store = ModelStore(root, opt_level=setting.opt_level, threads=setting.threads)
    return Worker(name, store, hashlib.sha256(model).hexdigest())


def _load(manifest: Manifest) -> onnx.ModelProto:
    return onnx.load(str(manifest.path))


def _map_weights(
    manifest: Manifest, change: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
) -> bytes:
    model = _load(manifest)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 1:
            init.CopyFrom(numpy_helper.from_array(change(array).astype(np.float32), init.name))
    return model.SerializeToString()


def perturbed(manifest: Manifest, scale: float, seed: int = PERTURB_SEED) -> bytes:
    rng = np.random.default_rng(seed)
    return _map_weights(manifest, lambda w: w * (1 + scale * rng.uniform(-1, 1, w.shape)))


def fp16(manifest: Manifest) -> bytes:
    return _map_weights(manifest, lambda w: w.astype(np.float16).astype(np.float32))


def int8(manifest: Manifest, tmp: Path) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = tmp / f"{manifest.name}-int8.onnx"
    quantize_dynamic(str(manifest.path), str(out), weight_type=QuantType.QInt8)
    return out.read_bytes()


def with_tamper(worker: Worker, tamper: Tamper, name: str) -> Worker:
    """The same session, fed inputs changed by ``tamper`` (hashing the job's own)."""
    return replace(worker, name=name, tamper=tamper)


# -- the models and their jobs --------------------------------------------------------------

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
JOBS_PER_MODEL = 1_000


@dataclass(frozen=True)
class Case:
    """A model, its jobs (one row each: a dishonest worker must be caught on every row) and
    the smallest change of one input a dishonest worker might make."""

    manifest: Manifest
    models: Path
    jobs: list[Arrays]
    tamper: Tamper


def digits_jobs(source: Path, count: int = JOBS_PER_MODEL) -> list[Arrays]:
    """The 200 held-out digits of samples.json, then noisy copies of them (Gaussian, sigma
    0.1, clipped to [0, 1]) and uniformly random images, from a fixed seed."""
    samples = json.loads((source / "samples.json").read_text())
    images = np.asarray(samples["images"], dtype=np.float32).reshape(-1, 1, 8, 8)[:count]
    rng = np.random.default_rng(5)
    noisy = max(0, count * 6 // 10 - len(images))
    picks = images[rng.integers(len(images), size=noisy)]
    made = [
        images,
        np.clip(picks + rng.normal(0.0, 0.1, picks.shape), 0.0, 1.0),
        rng.random((count - len(images) - noisy, 1, 8, 8)),
    ]
    rows = np.concatenate(made).astype(np.float32)
    return [{"input": np.ascontiguousarray(rows[i : i + 1])} for i in range(count)]


def one_grey_level(inputs: Arrays) -> Arrays:
    """The centre pixel moved by one of the digits' 16 grey levels, towards mid-grey."""
    image = inputs["input"].copy()
    pixel = image[0, 0, 4, 4]
    image[0, 0, 4, 4] = pixel + 1 / 16 if pixel < 0.5 else pixel - 1 / 16
    return {"input": image}


def digits_case(tmp: Path, count: int = JOBS_PER_MODEL) -> Case:
    source = REPO_MODELS / "digits-cnn"
    return Case(
        load_manifest(source), model_dir(tmp, source), digits_jobs(source, count), one_grey_level
    )


CASES: dict[str, Callable[[Path, int], Case]] = {"digits-cnn": digits_case}


def adversaries(tmp: Path, case: Case) -> list[Worker]:
    """Every dishonest worker, each claiming the class of an honest one at ``all/t1``."""
    manifest = case.manifest
    base = honest(case.models, manifest, HONEST_SETTINGS[0], "changed input")
    return [
        dishonest(tmp, manifest, "perturbed 1e-3", perturbed(manifest, 1e-3)),
        dishonest(tmp, manifest, "perturbed 1e-5", perturbed(manifest, 1e-5)),
        dishonest(tmp, manifest, "int8", int8(manifest, tmp)),
        dishonest(tmp, manifest, "fp16", fp16(manifest)),
        with_tamper(base, case.tamper, "changed input"),
    ]


@dataclass
class Runs:
    """Every worker's ballots on every job of one model."""

    case: Case
    honest: dict[str, list[Ballot]]  # by worker name, one per honest setting
    twin: list[Ballot]  # a second session of the first setting
    dishonest: dict[str, list[Ballot]]

    @property
    def tolerance(self) -> float:
        return self.case.manifest.tolerance_abs


def run_case(case: Case, tmp: Path) -> Runs:
    """Every honest setting, a twin session and every dishonest worker on every job."""
    model = case.manifest.model_hash
    workers = [honest(case.models, case.manifest, s) for s in HONEST_SETTINGS]
    twin = honest(case.models, case.manifest, HONEST_SETTINGS[0], "twin " + workers[0].name)
    return Runs(
        case,
        {w.name: [w.submit(model, job) for job in case.jobs] for w in workers},
        [twin.submit(model, job) for job in case.jobs],
        {w.name: [w.submit(model, job) for job in case.jobs] for w in adversaries(tmp, case)},
    )


def honest_spread(runs: Runs) -> dict[str, float]:
    """The largest difference between two honest settings over every job, per pair."""
    return {
        f"{a} vs {b}": max(
            max_abs_diff(x.outputs, y.outputs)
            for x, y in zip(runs.honest[a], runs.honest[b], strict=True)
        )
        for a, b in itertools.combinations(runs.honest, 2)
    }


def closest_approach(runs: Runs, adversary: str) -> float:
    """The smallest difference of a dishonest worker from any honest setting on any job."""
    return min(
        max_abs_diff(cheat.outputs, fair[job].outputs)
        for fair in runs.honest.values()
        for job, cheat in enumerate(runs.dishonest[adversary])
    )
