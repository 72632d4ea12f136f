"""The worker side of a job: deliver assignments, take signed results, take back the
assignments a worker hands back, and note that a worker is alive.

A submission counts only if it is for a job assigned to this worker and not yet answered,
its outputs match the model's declared outputs, its result hash is recomputed here from the
job's own inputs and the submitted outputs, and its EIP-712 attestation recovers to the
worker's key. Anything else is refused with a code and changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlmodel import Session, col, func, select

from ledger import scheduler
from ledger.context import Context
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Worker
from ledger.scheduler import refresh_eligibility
from protocol import hashing, tensors
from protocol.eip712 import Attestation, recover_attestation
from protocol.errors import ProtocolError
from protocol.fingerprint import Fingerprint

logger = logging.getLogger(__name__)
FINGERPRINT_MAX_CHARS = 512  # the column Assignment.fingerprint_json


def pull(session: Session, ctx: Context, worker: Worker, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` open assignments of this worker (re-delivered until answered)."""
    worker.last_seen = time.time()
    refresh_eligibility(session, ctx, worker)
    session.add(worker)
    rows = session.exec(
        select(Assignment, Job)
        .join(Job, col(Job.id) == col(Assignment.job_id))
        .where(Assignment.worker == worker.address, Assignment.status == AssignmentStatus.ASSIGNED)
        .order_by(col(Assignment.id))
        .limit(limit)
    ).all()
    now = int(time.time())
    out = []
    for assignment, job in rows:
        assignment.delivered_at = assignment.delivered_at or now
        session.add(assignment)
        out.append(
            {
                "job_id": job.id,
                "model_hash": job.model_hash,
                "input_hash": job.input_hash,
                "inputs": json.loads(job.inputs_json),
                "deadline": assignment.deadline,
            }
        )
    return out


class Refusal(Exception):
    """One submission refused; the others of the batch still count."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Duplicate(Exception):
    """The same signed answer again (a retry after a lost response): accepted, no change."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def _hex32(value: Any, field: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise Refusal("invalid_field", f"{field} must be 32 bytes of hex")
    return raw


def _outputs(ctx: Context, job: Job, wire: Any) -> dict[str, Any]:
    manifest = ctx.models[job.model_hash.removeprefix("0x")]
    if not isinstance(wire, dict) or set(wire) != {o.name for o in manifest.outputs}:
        raise Refusal("invalid_outputs", "outputs must name exactly the model's outputs")
    arrays = {
        k: tensors.decode(v, max_bytes=ctx.settings.max_tensor_bytes) for k, v in wire.items()
    }
    for spec in manifest.outputs:
        a = arrays[spec.name]
        want = (job.rows, *spec.shape[1:])
        if str(a.dtype) != spec.dtype or tuple(a.shape) != want:
            raise Refusal("invalid_outputs", f"output {spec.name} must be {spec.dtype}{list(want)}")
    return arrays


def _check_item(session: Session, ctx: Context, worker: Worker, item: dict[str, Any]) -> Assignment:
    jid = "0x" + _hex32(item.get("job_id"), "job_id").hex()
    assignment = session.exec(
        select(Assignment).where(Assignment.job_id == jid, Assignment.worker == worker.address)
    ).first()
    job = session.get(Job, jid)
    if assignment is None or job is None:
        raise Refusal("not_assigned", f"job {jid} is not assigned to this worker")
    if assignment.status == AssignmentStatus.SUBMITTED and assignment.signature == item.get(
        "signature"
    ):
        raise Duplicate(jid)  # a retry of the very same signed answer: idempotent
    if assignment.status == AssignmentStatus.EXPIRED:
        raise Refusal(
            "expired", f"the deadline of job {jid} passed; it was given to another worker"
        )
    if assignment.status != AssignmentStatus.ASSIGNED or job.status != JobStatus.PENDING:
        raise Refusal("already_submitted", f"job {jid} already has another answer of this worker")
    claimed = _hex32(item.get("result_hash"), "result_hash")
    try:
        fingerprint = Fingerprint.from_dict(item["fingerprint"])
        inputs = {
            k: tensors.decode(v, max_bytes=ctx.settings.max_tensor_bytes)
            for k, v in json.loads(job.inputs_json).items()
        }
        outputs = _outputs(ctx, job, item.get("outputs"))
        model = bytes.fromhex(job.model_hash.removeprefix("0x"))
        computed = hashing.result_hash(model, inputs, outputs)
        att = Attestation(
            bytes.fromhex(jid[2:]),
            model,
            bytes.fromhex(job.input_hash[2:]),
            claimed,
            fingerprint.digest(),
        )
        signature = bytes.fromhex(str(item.get("signature", "")).removeprefix("0x"))
        signer = recover_attestation(ctx.deployment.registry_domain, att, signature)
    except (KeyError, TypeError, ValueError) as exc:
        raise Refusal("invalid_field", f"malformed submission: {exc}") from exc
    except ProtocolError as exc:
        raise Refusal(exc.code, exc.detail) from exc
    if computed != claimed:
        raise Refusal("result_hash_mismatch", "the result hash does not commit to these outputs")
    if signer != worker.address:
        raise Refusal("bad_signature", f"the attestation is signed by {signer}")
    if len(fingerprint.canonical()) > FINGERPRINT_MAX_CHARS:
        raise Refusal("invalid_field", f"the fingerprint is over {FINGERPRINT_MAX_CHARS} chars")
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.result_hash = "0x" + claimed.hex()
    assignment.fingerprint = "0x" + fingerprint.digest().hex()
    assignment.fingerprint_json = fingerprint.canonical().decode()
    assignment.signature = "0x" + signature.hex()  # canonical: fromhex() also skips spaces
    assignment.outputs_json = json.dumps(item["outputs"], separators=(",", ":"))
    assignment.submitted_at = int(time.time())
    session.add(assignment)
    return assignment


def is_complete(session: Session, job: Job) -> bool:
    """Every replica the job wants has answered and none is still out: never fewer votes."""
    statuses = session.exec(select(Assignment.status).where(Assignment.job_id == job.id)).all()
    open_left = sum(1 for st in statuses if st == AssignmentStatus.ASSIGNED)
    answered = sum(1 for st in statuses if st == AssignmentStatus.SUBMITTED)
    return open_left == 0 and answered >= job.replicas_wanted


def submit(
    session: Session, ctx: Context, worker: Worker, items: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Record each valid item; return (per-item results, number of jobs now ready)."""
    worker.last_seen = time.time()
    session.add(worker)
    results: list[dict[str, Any]] = []
    touched: set[str] = set()
    for item in items:
        job_ref = str(item.get("job_id", "")) if isinstance(item, dict) else ""
        try:
            if not isinstance(item, dict):
                raise Refusal("invalid_field", "each result must be an object")
            assignment = _check_item(session, ctx, worker, item)
        except Duplicate as dup:
            results.append(
                {"job_id": dup.job_id, "status": "accepted", "error": None, "detail": "duplicate"}
            )
            continue
        except Refusal as refusal:
            results.append(
                {
                    "job_id": job_ref,
                    "status": "refused",
                    "error": refusal.code,
                    "detail": refusal.detail,
                }
            )
            continue
        touched.add(assignment.job_id)
        results.append(
            {"job_id": assignment.job_id, "status": "accepted", "error": None, "detail": ""}
        )
    session.flush()
    ready = 0
    for jid in touched:
        job = session.get(Job, jid)
        if job is not None and job.status == JobStatus.PENDING and is_complete(session, job):
            job.status = JobStatus.SUBMITTED
            session.add(job)
            ready += 1
    return results, ready


def heartbeat(session: Session, worker: Worker) -> int:
    """The worker is alive: it stays a candidate for new work for ``worker_seen_s`` more (a
    pull or a submission counts as well). Returns its assignments still unanswered."""
    worker.last_seen = time.time()
    session.add(worker)
    held = session.exec(
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.worker == worker.address, Assignment.status == AssignmentStatus.ASSIGNED)
    ).one()
    return int(held)


def release(
    session: Session, ctx: Context, worker: Worker, job_ids: list[str], reason: str = ""
) -> list[str]:
    """Hand back assignments the worker holds and will not answer (it is stopping, or it
    cannot run the job): each expires now, without a liveness fault (the worker said so in
    time), and the replica goes at once to a worker of a contributor not yet on the job.
    Returns the job ids released; ids of jobs not held by this worker (unknown, answered,
    expired, decided) are left out and change nothing."""
    worker.last_seen = time.time()
    session.add(worker)
    wanted = sorted({str(j).lower() for j in job_ids})
    if not wanted:
        return []
    rows = session.exec(
        select(Assignment, Job)
        .join(Job, col(Job.id) == col(Assignment.job_id))
        .where(
            Assignment.worker == worker.address,
            col(Assignment.job_id).in_(wanted),
            Assignment.status == AssignmentStatus.ASSIGNED,
            Job.status == JobStatus.PENDING,
        )
        .order_by(col(Assignment.job_id))
        .with_for_update()
    ).all()
    for assignment, _ in rows:
        assignment.status = AssignmentStatus.EXPIRED
        session.add(assignment)
    session.flush()
    for _, job in rows:
        scheduler.refill(session, ctx, job)
    released = [assignment.job_id for assignment, _ in rows]
    if released:
        logger.info(
            "worker %s handed back %d assignments (%s)",
            worker.address,
            len(released),
            reason or "no reason given",
        )
    return released
