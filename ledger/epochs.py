"""Close an epoch: freeze its jobs, publish the epoch file, redeem vouchers, post the root.

Steps, each safe to repeat after a crash at any point:
1. ``open_epoch``: the decided jobs not yet in an epoch become epoch n (status ``building``).
2. ``build_document``: the epoch file from the database alone (deterministic): every job
   with its votes and signatures, the voucher redeemed per client, the leaves of cumulative
   earnings and the totals. Conservation is checked before anything is sent.
3. ``settle_on_chain``: redeem each client's voucher up to what it was charged (the vault
   skips what is already redeemed), then post the root unless the chain already has it.
4. The epoch is marked ``posted``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, func, select
from web3 import Web3

from ledger import invariants
from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import EpochVetoed, InvariantViolation
from ledger.journal import TransferKind
from ledger.models import Assignment, AssignmentStatus, Epoch, EpochStatus, Job, JobStatus, Transfer
from protocol import epochfile, hashing, merkle, tensors
from protocol.contracts import EpochRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochOutcome:
    number: int
    jobs: int
    root: str
    file_hash: str
    cumulative_payout_wei: int
    cumulative_fees_wei: int
    gas_used: int


def open_epoch(session: Session) -> Epoch | None:
    building = session.exec(select(Epoch).where(Epoch.status == EpochStatus.BUILDING)).first()
    if building is not None:
        return building
    ready = session.exec(
        select(Job).where(
            col(Job.epoch).is_(None), col(Job.status).in_([JobStatus.ACCEPTED, JobStatus.FAILED])
        )
    ).all()
    if not any(j.status == JobStatus.ACCEPTED for j in ready):
        return None
    if session.exec(select(Transfer.id).where(Transfer.kind == TransferKind.PAY)).first() is None:
        return None  # no contributor has earned a wei yet: an earnings tree needs a leaf
    last = session.exec(select(func.max(Epoch.number))).one() or 0
    epoch = Epoch(number=last + 1, jobs=len(ready))
    session.add(epoch)
    for job in ready:
        job.epoch = epoch.number
        session.add(job)
    session.flush()
    invariants.check_full(session)
    return epoch


def _votes(session: Session, job_id: str) -> tuple[list[dict[str, Any]], bool]:
    """A job's votes, and whether they are contested across fingerprint classes (more than
    one answer and more than one class): then each vote carries its revealed outputs, so
    the auditor can apply the tolerance rule as the reconciler did."""
    rows = session.exec(
        select(Assignment)
        .where(Assignment.job_id == job_id, Assignment.status == AssignmentStatus.SUBMITTED)
        .order_by(col(Assignment.worker))
    ).all()
    contested = (
        len({(a.fingerprint, a.result_hash) for a in rows}) > 1
        and len({a.fingerprint for a in rows}) > 1
    )
    votes = []
    for a in rows:
        vote = {
            "worker": a.worker,
            "contributor": a.contributor,
            "result_hash": a.result_hash,
            "fingerprint": a.fingerprint,
            "fingerprint_info": json.loads(a.fingerprint_json or "{}"),
            "signature": a.signature,
        }
        if contested:
            vote["outputs"] = json.loads(a.outputs_json) if a.outputs_json else None
        votes.append(vote)
    return votes, contested


def _input_row_hashes(ctx: Context, job: Job) -> list[str]:
    inputs = {
        k: tensors.decode(v, max_bytes=ctx.settings.max_tensor_bytes)
        for k, v in json.loads(job.inputs_json).items()
    }
    return ["0x" + h.hex() for h in hashing.input_row_hashes(inputs)]


def _job_entry(job: Job, votes: list[dict[str, Any]], transfers: list[Transfer]) -> dict[str, Any]:
    paid = {
        t.credit_account_id.split(":", 1)[1]: str(t.amount_wei)
        for t in transfers
        if t.kind == "pay"
    }
    fee = sum(t.amount_wei for t in transfers if t.kind == "fee")
    return {
        "job_id": job.id,
        "client": job.client,
        "model_hash": job.model_hash,
        "input_hash": job.input_hash,
        "rows": job.rows,
        "price_wei": str(job.price_wei),
        "voucher_cumulative_wei": str(job.voucher_cumulative_wei),
        "status": job.status,
        "failure": job.failure,
        "result_hash": job.result_hash,
        "fingerprint": job.fingerprint,
        "votes": votes,
        "paid": paid,
        "fee_wei": str(fee),
    }


def _cumulative(session: Session, number: int) -> tuple[dict[str, int], int, dict[str, int]]:
    """Through epoch ``number``: earnings per contributor, fees, charges per client."""
    earned: dict[str, int] = defaultdict(int)
    fees = 0
    rows = session.exec(
        select(Transfer)
        .join(Job, col(Job.id) == col(Transfer.job_id))
        .where(col(Job.epoch) <= number, col(Transfer.kind).in_(["pay", "fee"]))
    ).all()
    for t in rows:
        if t.kind == "pay":
            earned[t.credit_account_id.split(":", 1)[1]] += t.amount_wei
        else:
            fees += t.amount_wei
    charged: dict[str, int] = defaultdict(int)
    for job in session.exec(
        select(Job).where(col(Job.epoch) <= number, Job.status == JobStatus.ACCEPTED)
    ).all():
        charged[job.client] += job.price_wei
    return dict(earned), fees, dict(charged)


def _vouchers(session: Session, number: int, charged: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for client in sorted(charged):
        jobs = session.exec(select(Job).where(Job.client == client, col(Job.epoch) <= number)).all()
        best = max(jobs, key=lambda j: j.voucher_cumulative_wei)  # amounts are text on SQLite
        if charged[client] > best.voucher_cumulative_wei:
            raise InvariantViolation(
                f"client_within_voucher: {client} charged above its voucher", client=client
            )
        out.append(
            {
                "client": client,
                "cumulative_amount_wei": str(best.voucher_cumulative_wei),
                "expiry": best.voucher_expiry,
                "signature": best.voucher_signature,
                "redeem_cumulative_wei": str(charged[client]),
            }
        )
    return out


def build_document(session: Session, ctx: Context, epoch: Epoch) -> dict[str, Any]:
    n = epoch.number
    jobs = session.exec(select(Job).where(Job.epoch == n).order_by(col(Job.id))).all()
    transfers: dict[str, list[Transfer]] = defaultdict(list)
    for t in session.exec(
        select(Transfer).join(Job, col(Job.id) == col(Transfer.job_id)).where(Job.epoch == n)
    ).all():
        transfers[t.job_id or ""].append(t)
    earned, fees, charged = _cumulative(session, n)
    leaves = [
        {"account": Web3.to_checksum_address(a), "cumulative_wei": str(v)}
        for a, v in sorted(earned.items())
        if v > 0
    ]
    tree = merkle.build([(leaf["account"], int(leaf["cumulative_wei"])) for leaf in leaves])
    results = merkle.build_results(result_leaves(jobs))
    payout = sum(earned.values())
    redeemed = sum(charged.values())
    if payout + fees != redeemed:
        raise InvariantViolation(
            f"epoch_conserves: payout {payout} + fees {fees} != charged {redeemed}"
        )
    previous = session.get(Epoch, n - 1)
    entries = []
    for j in jobs:
        votes, contested = _votes(session, j.id)
        entry = _job_entry(j, votes, transfers[j.id])
        if contested:
            entry["input_row_hashes"] = _input_row_hashes(ctx, j)
        entries.append(entry)
    d = ctx.deployment
    return {
        "format": epochfile.FORMAT,
        "epoch": n,
        "closed_at": epoch.closed_at,
        "chain_id": d.chain_id,
        "contracts": {
            "vault": d.vault,
            "registry": d.registry,
            "settlement": d.settlement,
            "token": d.token,
        },
        "fee_bps": ctx.settings.fee_bps,
        "jobs": entries,
        "vouchers": _vouchers(session, n, charged),
        "leaves": leaves,
        "root": "0x" + tree.root.hex(),
        "results_root": "0x" + results.root.hex(),
        "totals": {
            "cumulative_payout_wei": str(payout),
            "cumulative_fees_wei": str(fees),
            "cumulative_charged_wei": str(redeemed),
            "epoch_payout_wei": str(sum(int(v) for e in entries for v in e["paid"].values())),
            "epoch_fees_wei": str(sum(int(e["fee_wei"]) for e in entries)),
            "jobs_accepted": sum(1 for j in jobs if j.status == JobStatus.ACCEPTED),
            "jobs_failed": sum(1 for j in jobs if j.status == JobStatus.FAILED),
        },
        "previous": {"epoch": n - 1, "root": previous.root if previous else None},
    }


def result_leaves(jobs: Sequence[Job]) -> list[merkle.ResultLeaf]:
    """Leaves of the results tree: the consensus (fingerprint class, result hash) of every
    accepted job with its model and input. A slash proves a worker signed another result."""
    leaves = []
    for j in jobs:
        if j.status != JobStatus.ACCEPTED:
            continue
        if not (j.fingerprint and j.result_hash):
            raise InvariantViolation(f"accepted_has_consensus: job {j.id} has no consensus result")
        hashes = (j.id, j.model_hash, j.input_hash, j.fingerprint, j.result_hash)
        leaves.append(merkle.ResultLeaf(*(bytes.fromhex(h[2:]) for h in hashes)))
    return leaves


def epoch_path(ctx: Context, number: int) -> Path:
    return ctx.settings.epochs_dir / f"epoch-{number:06d}.json"


def _write_atomic(path: Path, raw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(raw)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def settle_on_chain(ctx: Context, doc: dict[str, Any], file_hash: bytes) -> int:
    """Redeem vouchers, then post the root; both idempotent. Returns the gas spent."""
    chain = ctx.chain
    gas_before = chain.gas_used
    items = []
    for v in doc["vouchers"]:
        target = int(v["redeem_cumulative_wei"])
        if target > int(chain.call(chain.vault.functions.redeemedOf(v["client"]), "redeemedOf")):
            voucher = (
                Web3.to_checksum_address(v["client"]),
                int(v["cumulative_amount_wei"]),
                int(v["expiry"]),
            )
            items.append((voucher, bytes.fromhex(v["signature"].removeprefix("0x")), target))
    size = ctx.settings.redeem_batch_size
    for start in range(0, len(items), size):
        chain.transact(chain.vault.functions.redeem(items[start : start + size]), "redeem")
    n, root = int(doc["epoch"]), bytes.fromhex(doc["root"][2:])
    results_root = bytes.fromhex(doc["results_root"][2:])
    last = int(chain.call(chain.settlement.functions.lastEpoch(), "lastEpoch"))
    if last >= n:
        record = EpochRecord.from_call(chain.call(chain.settlement.functions.epochs(n), "epochs"))
        if record.vetoed:  # the same file would be vetoed again: a person must look first
            raise EpochVetoed(f"epoch {n} was vetoed by the guardian; it stays unposted for review")
        if (record.root, record.results_root, record.file_hash) != (root, results_root, file_hash):
            raise InvariantViolation(
                f"epoch {n} is on chain with root 0x{record.root.hex()}, not {doc['root']}"
            )
        return chain.gas_used - gas_before
    totals = doc["totals"]
    chain.transact(
        chain.settlement.functions.postEpoch(
            n,
            root,
            results_root,
            file_hash,
            int(totals["cumulative_payout_wei"]),
            int(totals["cumulative_fees_wei"]),
        ),
        "postEpoch",
    )
    return chain.gas_used - gas_before


def close_epoch(ctx: Context) -> EpochOutcome | None:
    """Close and settle the next epoch, or finish one a crash left half done."""
    with session_scope(ctx.engine) as session:
        epoch = open_epoch(session)
        if epoch is None:
            return None
        doc = build_document(session, ctx, epoch)
    raw = epochfile.canonical_bytes(doc)
    digest = epochfile.file_hash(raw)
    _write_atomic(epoch_path(ctx, epoch.number), raw)
    gas = settle_on_chain(ctx, doc, digest)
    with session_scope(ctx.engine) as session:
        row = session.get(Epoch, epoch.number)
        if row is None:
            raise InvariantViolation(f"epoch {epoch.number} vanished while it was being settled")
        row.status = EpochStatus.POSTED
        row.root, row.file_hash = doc["root"], "0x" + digest.hex()
        row.cumulative_payout_wei = int(doc["totals"]["cumulative_payout_wei"])
        row.cumulative_fees_wei = int(doc["totals"]["cumulative_fees_wei"])
        row.gas_used += gas
        row.posted_at = int(time.time())
        session.add(row)
    logger.info("epoch %d posted: %d jobs, root %s", epoch.number, len(doc["jobs"]), doc["root"])
    return EpochOutcome(
        epoch.number,
        len(doc["jobs"]),
        doc["root"],
        "0x" + digest.hex(),
        int(doc["totals"]["cumulative_payout_wei"]),
        int(doc["totals"]["cumulative_fees_wei"]),
        gas,
    )
