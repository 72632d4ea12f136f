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
from typing import Any, NamedTuple

from sqlalchemy import bindparam, update
from sqlalchemy import select as core_select
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
# A worker's ``last_seen`` is rewritten at most this often. It is read only against
# ``worker_seen_s`` (30 s: eligible for new work if seen since) and shown to its contributor
# to a tenth of a second; a write per request made every pull and submission an UPDATE of the
# worker's row, for nothing.
SEEN_RESOLUTION_S = 1.0


def seen(worker: Worker, now: float | None = None) -> None:
    """Note that ``worker`` is alive, to within ``SEEN_RESOLUTION_S``."""
    now = time.time() if now is None else now
    if not now - worker.last_seen < SEEN_RESOLUTION_S:
        worker.last_seen = now


class Delivery(NamedTuple):
    """One assignment as it is delivered; ``inputs_json`` is the job's inputs as admitted."""

    job_id: str
    model_hash: str
    input_hash: str
    inputs_json: str
    deadline: int


# The statements of every delivery and submission, built once: building a statement and its
# cache key cost about three times as much as running it (docs/performance.md)
_OPEN_ASSIGNMENTS = (
    core_select(
        col(Assignment.id),
        col(Assignment.delivered_at),
        col(Job.id),
        col(Job.model_hash),
        col(Job.input_hash),
        col(Job.inputs_json),
        col(Assignment.deadline),
    )
    .join(Job, col(Job.id) == col(Assignment.job_id))
    .where(
        col(Assignment.worker) == bindparam("worker"),
        col(Assignment.status) == AssignmentStatus.ASSIGNED,
    )
    .order_by(col(Assignment.id))
    .limit(bindparam("limit"))
)
_DELIVERED = (
    update(Assignment)
    .where(col(Assignment.id).in_(bindparam("ids", expanding=True)))
    .values(delivered_at=bindparam("at"))
)
_HELD = (
    select(Assignment, Job)
    .join(Job, col(Job.id) == col(Assignment.job_id))
    .where(
        col(Assignment.worker) == bindparam("worker"),
        col(Assignment.job_id).in_(bindparam("job_ids", expanding=True)),
    )
)
_STATUS_COUNTS = (
    select(Assignment.job_id, Assignment.status, func.count())
    .where(col(Assignment.job_id).in_(bindparam("job_ids", expanding=True)))
    .group_by(col(Assignment.job_id), col(Assignment.status))
)


def deliver(session: Session, ctx: Context, worker: Worker, limit: int) -> list[Delivery]:
    """Up to ``limit`` open assignments of this worker, oldest first (re-delivered until
    answered); the first delivery of each is noted. Read as plain rows, noted by one UPDATE:
    an agent's every pull asks again for all it holds."""
    seen(worker)
    refresh_eligibility(session, ctx, worker)  # adds the worker to the session
    # on the connection, past the ORM: nothing of these rows is pending in the session
    # (a submission in the same unit of work flushed its own)
    connection = session.connection()
    params = {"worker": worker.address, "limit": limit}
    rows = connection.execute(_OPEN_ASSIGNMENTS, params).all()
    first = [row[0] for row in rows if not row[1]]
    if first:
        connection.execute(_DELIVERED, {"ids": first, "at": int(time.time())})
    return [Delivery(*row[2:]) for row in rows]


def pull(session: Session, ctx: Context, worker: Worker, limit: int) -> list[dict[str, Any]]:
    """``deliver`` with each job's inputs decoded: what ``GET /v1/work`` answers."""
    return [
        {
            "job_id": d.job_id,
            "model_hash": d.model_hash,
            "input_hash": d.input_hash,
            "inputs": json.loads(d.inputs_json),
            "deadline": d.deadline,
        }
        for d in deliver(session, ctx, worker, limit)
    ]


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


def _job_id(item: Any) -> str | None:
    """The normalised job id an item names, or None where it names none readable."""
    if not isinstance(item, dict):
        return None
    try:
        return "0x" + _hex32(item.get("job_id"), "job_id").hex()
    except Refusal:
        return None


def _held(session: Session, worker: Worker, job_ids: set[str]) -> dict[str, tuple[Assignment, Job]]:
    """This worker's assignment of each of ``job_ids`` and its job, in one query."""
    if not job_ids:
        return {}
    rows = session.execute(_HELD, {"worker": worker.address, "job_ids": sorted(job_ids)}).all()
    return {assignment.job_id: (assignment, job) for assignment, job in rows}


def _check_item(
    ctx: Context, worker: Worker, item: dict[str, Any], held: dict[str, tuple[Assignment, Job]]
) -> Assignment:
    jid = "0x" + _hex32(item.get("job_id"), "job_id").hex()
    if jid not in held:
        raise Refusal("not_assigned", f"job {jid} is not assigned to this worker")
    assignment, job = held[jid]
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
        digest, canonical = fingerprint.digest(), fingerprint.canonical()
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
            digest,
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
    if len(canonical) > FINGERPRINT_MAX_CHARS:
        raise Refusal("invalid_field", f"the fingerprint is over {FINGERPRINT_MAX_CHARS} chars")
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.result_hash = "0x" + claimed.hex()
    assignment.fingerprint = "0x" + digest.hex()
    assignment.fingerprint_json = canonical.decode()
    assignment.signature = "0x" + signature.hex()  # canonical: fromhex() also skips spaces
    assignment.outputs_json = json.dumps(item["outputs"], separators=(",", ":"))
    assignment.submitted_at = int(time.time())
    return assignment


def _result(
    ctx: Context, worker: Worker, item: Any, held: dict[str, tuple[Assignment, Job]]
) -> tuple[dict[str, Any], Assignment | None]:
    """The answer to one item, and the assignment it recorded (None if it recorded none)."""
    job_ref = str(item.get("job_id", "")) if isinstance(item, dict) else ""
    try:
        if not isinstance(item, dict):
            raise Refusal("invalid_field", "each result must be an object")
        assignment = _check_item(ctx, worker, item, held)
    except Duplicate as dup:
        return {
            "job_id": dup.job_id,
            "status": "accepted",
            "error": None,
            "detail": "duplicate",
        }, None
    except Refusal as refusal:
        answer = {"job_id": job_ref, "status": "refused", "error": refusal.code}
        return answer | {"detail": refusal.detail}, None
    return {
        "job_id": assignment.job_id,
        "status": "accepted",
        "error": None,
        "detail": "",
    }, assignment


def is_complete(session: Session, job: Job) -> bool:
    """Every replica the job wants has answered and none is still out: never fewer votes."""
    return _complete(session, [job]) == [job]


def _complete(session: Session, jobs: list[Job]) -> list[Job]:
    """Those of ``jobs`` whose every wanted replica has answered with none still out, by one
    grouped query (never fewer votes than wanted)."""
    if not jobs:
        return []
    counts: dict[tuple[str, str], int] = {}
    params = {"job_ids": [job.id for job in jobs]}
    rows = session.connection().execute(_STATUS_COUNTS, params).all()  # the caller flushed
    for jid, status, n in rows:
        counts[(jid, str(status))] = int(n)
    return [
        job
        for job in jobs
        if counts.get((job.id, AssignmentStatus.ASSIGNED), 0) == 0
        and counts.get((job.id, AssignmentStatus.SUBMITTED), 0) >= job.replicas_wanted
    ]


def submit(
    session: Session, ctx: Context, worker: Worker, items: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Record each valid item; return (per-item results in the items' order, the ids of the
    jobs now ready to decide). The batch's assignments and jobs are read by one query up
    front; each item then sees what the items before it recorded (the same job twice: the
    second is a duplicate if it carries the same signature, else already submitted); nothing
    is written until every item is checked, and completeness is one grouped query."""
    seen(worker)
    session.add(worker)
    held = _held(session, worker, {jid for item in items if (jid := _job_id(item))})
    results: list[dict[str, Any]] = []
    touched: dict[str, Job] = {}
    with session.no_autoflush:
        for item in items:
            answer, assignment = _result(ctx, worker, item, held)
            results.append(answer)
            if assignment is not None:
                touched[assignment.job_id] = held[assignment.job_id][1]
    session.flush()
    pending = [job for job in touched.values() if job.status == JobStatus.PENDING]
    ready = _complete(session, pending)
    for job in ready:
        job.status = JobStatus.SUBMITTED
    return results, [job.id for job in ready]


def heartbeat(session: Session, worker: Worker) -> int:
    """The worker is alive: it stays a candidate for new work for ``worker_seen_s`` more (a
    pull or a submission counts as well). Returns its assignments still unanswered."""
    seen(worker)
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
    seen(worker)
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
