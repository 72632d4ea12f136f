"""Audit routes: epochs, the published epoch files (exact bytes), Merkle proofs, and the
inputs of an epoch's jobs (for ``inferledger audit --replay``)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response
from sqlmodel import col, select

from api.deps import ContextDep, SessionDep
from api.schemas import EpochPublic, JobInputsPublic, ProofPublic, ResultProofPublic
from ledger.auth import checked_address
from ledger.epochs import epoch_path
from ledger.errors import NotFound
from ledger.models import Epoch, EpochStatus, Job
from protocol import epochfile, merkle
from protocol.errors import ProofError

router = APIRouter(prefix="/v1/epochs", tags=["audit"])


def _public(e: Epoch) -> EpochPublic:
    return EpochPublic(
        number=e.number,
        status=e.status,
        jobs=e.jobs,
        root=e.root,
        file_hash=e.file_hash,
        cumulative_payout_wei=str(e.cumulative_payout_wei),
        cumulative_fees_wei=str(e.cumulative_fees_wei),
        gas_used=e.gas_used,
        closed_at=e.closed_at,
        posted_at=e.posted_at,
    )


def _posted(session: SessionDep, number: int) -> Epoch:
    epoch = session.get(Epoch, number)
    if epoch is None or epoch.status != EpochStatus.POSTED:
        raise NotFound(f"epoch {number} is not posted")
    return epoch


@router.get("", response_model=list[EpochPublic])
def list_epochs(session: SessionDep) -> list[EpochPublic]:
    return [_public(e) for e in session.exec(select(Epoch).order_by(col(Epoch.number))).all()]


@router.get("/{number}", response_model=EpochPublic)
def get_epoch(number: int, session: SessionDep) -> EpochPublic:
    return _public(_posted(session, number))


@router.get("/{number}/file")
def get_epoch_file(number: int, session: SessionDep, ctx: ContextDep) -> Response:
    """The exact bytes whose keccak256 is posted on chain."""
    _posted(session, number)
    return Response(content=epoch_path(ctx, number).read_bytes(), media_type="application/json")


@router.get("/{number}/proofs/{account}", response_model=ProofPublic)
def get_proof(number: int, account: str, session: SessionDep, ctx: ContextDep) -> ProofPublic:
    _posted(session, number)
    account = checked_address(account)
    doc = epochfile.parse(epoch_path(ctx, number).read_bytes())
    tree = merkle.build([(leaf["account"], int(leaf["cumulative_wei"])) for leaf in doc["leaves"]])
    try:
        proof = tree.proof(account)
    except ProofError as exc:
        raise NotFound(f"{account} earned nothing up to epoch {number}") from exc
    return ProofPublic(
        epoch=number,
        account=account,
        cumulative_wei=str(tree.amount_of(account)),
        proof=["0x" + p.hex() for p in proof],
        root="0x" + tree.root.hex(),
    )


@router.get("/{number}/results/{job_id}", response_model=ResultProofPublic)
def get_result_proof(
    number: int, job_id: str, session: SessionDep, ctx: ContextDep
) -> ResultProofPublic:
    """A receipt that the job's consensus result is under the epoch's posted results root."""
    _posted(session, number)
    doc = epochfile.parse(epoch_path(ctx, number).read_bytes())
    job = next(
        (j for j in doc["jobs"] if j["job_id"] == job_id.lower() and j["status"] == "accepted"),
        None,
    )
    if job is None:
        raise NotFound(f"job {job_id} is not an accepted job of epoch {number}")
    tree = merkle.build_results(epochfile.result_leaves(doc))
    key = (bytes.fromhex(job["job_id"][2:]), bytes.fromhex(job["fingerprint"][2:]))
    return ResultProofPublic(
        epoch=number,
        job_id=job["job_id"],
        model_hash=job["model_hash"],
        input_hash=job["input_hash"],
        fingerprint=job["fingerprint"],
        result_hash=job["result_hash"],
        proof=["0x" + p.hex() for p in tree.proof_of(key)],
        results_root="0x" + tree.root.hex(),
    )


@router.get("/{number}/jobs/{job_id}/inputs", response_model=JobInputsPublic)
def get_job_inputs(number: int, job_id: str, session: SessionDep) -> JobInputsPublic:
    """The inputs of a job of a posted epoch, as its workers received them: what an auditor
    replays. The epoch file carries only their hash (``input_hash``), which the auditor
    checks them against; any other job is not found."""
    _posted(session, number)
    job = session.get(Job, job_id.lower())
    if job is None or job.epoch != number:
        raise NotFound(f"job {job_id} is not a job of epoch {number}")
    return JobInputsPublic(
        epoch=number,
        job_id=job.id,
        model_hash=job.model_hash,
        input_hash=job.input_hash,
        inputs=json.loads(job.inputs_json),
    )
