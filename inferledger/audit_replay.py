"""``inferledger audit --replay N``: run N random accepted jobs of the audited epochs again,
with the device worker's own inference code, and compare with their consensus.

The jobs come from epoch files whose keccak256 the audit found posted on chain. Their inputs
come from the API (``GET /v1/epochs/{n}/jobs/{job_id}/inputs``) and count only when they hash
to the job's ``input_hash`` in that file, which its workers signed and the posted results
root commits to: the API is trusted for nothing. The model runs in
``worker.inference.ModelStore`` (each file checked against its manifest's sha256, every row
at batch 1, the pinned onnxruntime settings), and its result is compared:

- bit for bit with the consensus result hash, when the auditor can run the consensus's
  fingerprint class itself: the same onnxruntime version, provider and ISA tier (the class's
  optimisation level and threads it takes from the class);
- within the model's ``tolerance_abs`` with the consensus outputs the file reveals (for jobs
  contested across classes), when it cannot;
- not at all otherwise. Such jobs are not comparable: they are never picked, and the report
  says how many there were.

Faults: ``replay_coverage`` (replay was asked for and not one accepted job can be
compared here: the fingerprint classes are the workers' own declarations, so colluders who
all declare a class no auditor runs must not pass unreplayed), ``replay_inputs`` (the
inputs cannot be had or decoded), ``replay_input_hash`` (they
do not hash to the job's ``input_hash``), ``replay_run`` (the auditor cannot run the model
on them), ``replay_mismatch`` (its result disagrees with the consensus).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from protocol import hashing, tensors
from protocol.consensus import within_tolerance
from protocol.errors import ProtocolError
from protocol.fingerprint import Fingerprint
from worker.config import OptLevel
from worker.errors import WorkerError
from worker.inference import OPT_LEVELS, ModelStore

if TYPE_CHECKING:
    from inferledger.audit import AuditReport

MAX_INPUT_BYTES = 1 << 22  # per input tensor: above the API's own limit, and bounded
MAX_OUTPUT_BYTES = 1 << 22
MAX_REPLAY_THREADS = 64  # a class's intra-op threads the auditor will run with
DEFAULT_CLASS: tuple[OptLevel, int] = ("all", 1)  # the worker's defaults
Arrays = dict[str, npt.NDArray[Any]]
_BAD = (KeyError, ValueError, TypeError, AttributeError, ProtocolError)


@dataclass(frozen=True)
class Candidate:
    """An accepted job the auditor can compare: in a class it can run, or with its
    consensus outputs revealed."""

    epoch: int
    job: dict[str, Any]
    run_class: Fingerprint | None  # the consensus class, when the auditor can run it
    revealed: dict[str, Any] | None  # the consensus outputs (wire), when the file has them


@dataclass(frozen=True)
class ReplayedJob:
    epoch: int
    job_id: str
    model_hash: str
    outcome: str  # agrees, mismatch, inputs_unavailable, input_hash, not_run
    compared: str | None  # exact, tolerance
    max_abs_diff: float | None  # auditor's outputs against the revealed consensus outputs
    detail: str


@dataclass
class ReplaySummary:
    requested: int
    seed: int
    runs_as: dict[str, str]  # the auditor's onnxruntime version, provider and ISA tier
    accepted: int = 0  # distinct accepted jobs in the audited files
    comparable: int = 0
    jobs: list[ReplayedJob] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def count(self, outcome: str) -> int:
        return sum(1 for j in self.jobs if j.outcome == outcome)


class Replayer:
    def __init__(
        self,
        fetch_inputs: Callable[[int, str], bytes],
        models_dir: Path,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        """``fetch_inputs(n, job_id)`` gives the body of the inputs route for that job
        (``{"inputs": {name: wire tensor}}``); models come from ``models_dir``. A bad
        models dir raises ``WorkerError`` here, before anything is replayed."""
        self.fetch_inputs, self.models_dir, self.cache_dir = fetch_inputs, models_dir, cache_dir
        self._stores: dict[tuple[OptLevel, int], ModelStore] = {}
        self.own = self._store(*DEFAULT_CLASS).fingerprint()

    def _store(self, opt_level: OptLevel, threads: int) -> ModelStore:
        key = (opt_level, threads)
        if key not in self._stores:
            self._stores[key] = ModelStore(
                self.models_dir, opt_level=opt_level, threads=threads, cache_dir=self.cache_dir
            )
        return self._stores[key]

    def runnable(self, fp: Fingerprint) -> bool:
        """Whether the auditor can run class ``fp`` itself."""
        return (
            (fp.ort, fp.provider, fp.isa) == (self.own.ort, self.own.provider, self.own.isa)
            and fp.opt_level in OPT_LEVELS
            and 1 <= fp.threads <= MAX_REPLAY_THREADS
        )

    def candidates(self, documents: dict[int, dict[str, Any]]) -> tuple[list[Candidate], int]:
        """The comparable accepted jobs of the files (each job once), and how many accepted
        jobs there are."""
        found, seen = [], set()
        for n in sorted(documents):
            for job in documents[n].get("jobs", []):
                try:
                    if job["status"] != "accepted" or job["job_id"] in seen:
                        continue
                    seen.add(job["job_id"])
                    candidate = self._candidate(n, job)
                except _BAD:  # a malformed job is file_format's fault
                    continue
                if candidate is not None:
                    found.append(candidate)
        return found, len(seen)

    def _candidate(self, n: int, job: dict[str, Any]) -> Candidate | None:
        consensus = (job["fingerprint"], job["result_hash"])
        run_class, revealed = None, None
        for vote in job["votes"]:
            if (vote["fingerprint"], vote["result_hash"]) != consensus:
                continue
            fp = Fingerprint.from_dict(vote["fingerprint_info"])
            if "0x" + fp.digest().hex() == job["fingerprint"] and self.runnable(fp):
                run_class = fp
            if isinstance(vote.get("outputs"), dict) and revealed is None:
                revealed = vote["outputs"]
        if run_class is None and revealed is None:
            return None
        return Candidate(n, job, run_class, revealed)

    def pick(
        self, documents: dict[int, dict[str, Any]], count: int, seed: int
    ) -> tuple[ReplaySummary, list[Candidate]]:
        """``count`` comparable jobs picked at random by ``seed`` (all of them when there
        are fewer), in epoch and job order, and the summary their replay will fill."""
        own = self.own
        summary = ReplaySummary(
            count, seed, {"ort": own.ort, "provider": own.provider, "isa": own.isa}
        )
        found, summary.accepted = self.candidates(documents)
        summary.comparable = len(found)
        picked = random.Random(seed).sample(found, min(count, len(found)))
        return summary, sorted(picked, key=lambda c: (c.epoch, c.job["job_id"]))

    def run(
        self,
        report: AuditReport,
        summary: ReplaySummary,
        picked: list[Candidate],
        progress: Callable[[ReplayedJob], None] | None = None,
    ) -> None:
        """Replay the picked jobs, each fault checked into ``report``; the summary goes
        into the report too."""
        if summary.requested and summary.accepted:
            # workers declare their fingerprint class: colluders who all declare one no
            # auditor runs, and contest nothing, would otherwise never be replayed
            report.check(
                "replay_coverage",
                summary.comparable > 0,
                report.epochs[-1] if report.epochs else 0,
                f"none of {summary.accepted} accepted jobs can be compared on this machine "
                f"(onnxruntime {self.own.ort} {self.own.provider} {self.own.isa}): replay them "
                "where their fingerprint class runs",
            )
        for candidate in picked:
            done = self._replay(candidate, report)
            summary.jobs.append(done)
            if progress is not None:
                progress(done)
        report.replay = summary.as_dict()

    def replay(
        self, report: AuditReport, documents: dict[int, dict[str, Any]], count: int, seed: int
    ) -> ReplaySummary:
        """``pick`` then ``run``."""
        summary, picked = self.pick(documents, count, seed)
        self.run(report, summary, picked)
        return summary

    def _replay(self, c: Candidate, report: AuditReport) -> ReplayedJob:
        n, job = c.epoch, c.job
        jid, model_hex = job["job_id"], job["model_hash"]

        def ended(outcome: str, check: str, detail: str) -> ReplayedJob:
            report.check(check, False, n, f"job {jid}: {detail}")
            return ReplayedJob(n, jid, model_hex, outcome, None, None, detail)

        try:
            inputs = _decode(json.loads(self.fetch_inputs(n, jid))["inputs"], MAX_INPUT_BYTES)
        except Exception as exc:  # any way the inputs cannot be had is the same fault
            return ended("inputs_unavailable", "replay_inputs", f"its inputs cannot be had: {exc}")
        report.check("replay_inputs", True, n, "")
        try:
            served = "0x" + hashing.input_hash(inputs).hex()
        except ProtocolError as exc:
            served = f"nothing ({exc})"
        if served != str(job["input_hash"]).lower():
            return ended(
                "input_hash",
                "replay_input_hash",
                f"the inputs served hash to {served}, its input_hash is {job['input_hash']}",
            )
        report.check("replay_input_hash", True, n, "")
        run_class = c.run_class
        try:
            store = self._store(*(_class_of(run_class) if run_class else DEFAULT_CLASS))
            outputs = store.run(model_hex, inputs)
            tolerance = store.manifest(model_hex).tolerance_abs
        except (WorkerError, ProtocolError) as exc:
            return ended("not_run", "replay_run", f"the auditor cannot run it: {exc}")
        report.check("replay_run", True, n, "")
        done = _compare(c, inputs, outputs, tolerance)
        report.check("replay_mismatch", done.outcome == "agrees", n, f"job {jid}: {done.detail}")
        return done


def _class_of(fp: Fingerprint) -> tuple[OptLevel, int]:
    return ("disabled" if fp.opt_level == "disabled" else "all"), fp.threads


def _decode(wire: Any, max_bytes: int) -> Arrays:
    if not isinstance(wire, dict) or not wire:
        raise ValueError("no tensors")
    return {str(k): tensors.decode(v, max_bytes=max_bytes) for k, v in wire.items()}


def _max_abs_diff(ours: Arrays, theirs: Arrays) -> float | None:
    """The largest difference of any element of two float outputs of equal names and
    shapes; None when they cannot be compared element by element."""
    if set(ours) != set(theirs):
        return None
    worst = 0.0
    for name, a in ours.items():
        b = theirs[name]
        if a.shape != b.shape or not np.issubdtype(a.dtype, np.number):
            return None
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def _hashes_to(model: bytes, inputs: Arrays, outputs: Arrays, result: str) -> bool:
    try:
        return "0x" + hashing.result_hash(model, inputs, outputs).hex() == result
    except ProtocolError:  # other rows than the inputs
        return False


def _compare(c: Candidate, inputs: Arrays, outputs: Arrays, tolerance: float) -> ReplayedJob:
    """The auditor's outputs against the consensus: the hash in the consensus's own class,
    else the revealed consensus outputs within ``tolerance``."""
    job = c.job
    model = bytes.fromhex(job["model_hash"][2:])
    ours = "0x" + hashing.result_hash(model, inputs, outputs).hex()
    try:
        revealed = _decode(c.revealed, MAX_OUTPUT_BYTES) if c.revealed is not None else None
    except _BAD:
        revealed = None
    diff = _max_abs_diff(outputs, revealed) if revealed is not None else None
    apart = "" if diff is None else f"; its outputs differ from the revealed ones by {diff:.3g}"
    if c.run_class is not None:
        agrees, compared = ours == str(job["result_hash"]).lower(), "exact"
        detail = (
            f"the auditor's run in the consensus class gives result {ours}, the consensus is "
            f"{job['result_hash']}{apart}"
        )
    else:
        compared = "tolerance"
        consensus = str(job["result_hash"]).lower()
        bound = revealed is not None and _hashes_to(model, inputs, revealed, consensus)
        encoded = json.dumps({k: tensors.encode(v) for k, v in outputs.items()})
        agrees = bound and within_tolerance(
            encoded, json.dumps(c.revealed), tolerance, MAX_OUTPUT_BYTES
        )
        detail = (
            f"the consensus outputs revealed do not hash to its result {job['result_hash']}"
            if not bound
            else f"the auditor's outputs are not within {tolerance} of the consensus outputs{apart}"
        )
    outcome = "agrees" if agrees else "mismatch"
    return ReplayedJob(
        c.epoch, job["job_id"], job["model_hash"], outcome, compared, diff, "" if agrees else detail
    )
