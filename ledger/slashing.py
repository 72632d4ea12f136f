"""Submit slashes that have evidence the contract checks itself.

A worker is slashable only for a wrong result it signed: its attestation's result hash
differs from the consensus recorded in a finalized epoch for the same job and fingerprint
class. Votes from another fingerprint class are never slashed (honest CPUs differ across
classes) and silence is never slashed (a liveness fault). Each (worker, job) is submitted
once; a refusal by the contract is recorded and not retried blindly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select

from ledger.context import Context
from ledger.db import session_scope
from ledger.epochs import epoch_path
from ledger.errors import ChainError
from ledger.models import (
    Assignment,
    AssignmentStatus,
    Epoch,
    EpochStatus,
    Job,
    JobStatus,
    Slash,
    SlashStatus,
)
from protocol import epochfile, merkle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evidence:
    epoch: int
    job: Job
    vote: Assignment


def find_evidence(session: Session, ctx: Context, limit: int) -> list[Evidence]:
    """Dissenting votes in the consensus class of accepted jobs of finalized epochs."""
    chain = ctx.chain
    found: list[Evidence] = []
    epochs = session.exec(
        select(Epoch).where(Epoch.status == EpochStatus.POSTED).order_by(col(Epoch.number))
    ).all()
    for epoch in epochs:
        if not chain.call(chain.settlement.functions.isFinalized(epoch.number), "isFinalized"):
            continue
        rows = session.exec(
            select(Job, Assignment)
            .join(Assignment, col(Assignment.job_id) == col(Job.id))
            .where(
                Job.epoch == epoch.number,
                Job.status == JobStatus.ACCEPTED,
                Assignment.status == AssignmentStatus.SUBMITTED,
                col(Assignment.fingerprint) == col(Job.fingerprint),
                col(Assignment.result_hash) != col(Job.result_hash),
            )
        ).all()
        for job, vote in rows:
            if session.get(Slash, f"{vote.worker}:{job.id}") is None:
                found.append(Evidence(epoch.number, job, vote))
                if len(found) >= limit:
                    return found
    return found


def _proof(ctx: Context, evidence: Evidence) -> list[bytes]:
    doc = epochfile.parse(epoch_path(ctx, evidence.epoch).read_bytes())
    tree = merkle.build_results(epochfile.result_leaves(doc))
    job = evidence.job
    return tree.proof_of((bytes.fromhex(job.id[2:]), bytes.fromhex((job.fingerprint or "")[2:])))


def submit(ctx: Context, evidence: Evidence) -> Slash:
    job, vote = evidence.job, evidence.vote
    att = tuple(
        bytes.fromhex(h[2:])
        for h in (
            job.id,
            job.model_hash,
            job.input_hash,
            vote.result_hash or "",
            vote.fingerprint or "",
        )
    )
    row = Slash(
        id=f"{vote.worker}:{job.id}",
        worker=vote.worker,
        contributor=vote.contributor,
        job_id=job.id,
        epoch=evidence.epoch,
        status=SlashStatus.SUBMITTED,
    )
    chain = ctx.chain
    try:
        receipt = chain.transact(
            chain.registry.functions.slash(
                att,
                bytes.fromhex((vote.signature or "")[2:]),
                evidence.epoch,
                bytes.fromhex((job.result_hash or "")[2:]),
                _proof(ctx, evidence),
            ),
            "slash",
        )
        row.tx = "0x" + bytes(receipt["transactionHash"]).hex()
    except ChainError as exc:
        if exc.name != "StakeAlreadySlashed":  # already done by an earlier run: not a refusal
            row.status, row.detail = SlashStatus.REFUSED, exc.detail[:256]
            logger.error("slash of %s for job %s refused: %s", vote.worker, job.id, exc.detail)
    return row


def submit_slashes(ctx: Context, limit: int) -> list[Slash]:
    with session_scope(ctx.engine) as session:
        evidence = find_evidence(session, ctx, limit)
    done = []
    for item in evidence:
        row = submit(ctx, item)
        with session_scope(ctx.engine) as session:
            session.merge(row)
        done.append(row)
        logger.info(
            "slash %s: worker %s, job %s, epoch %d", row.status, row.worker, row.job_id, row.epoch
        )
    return done
