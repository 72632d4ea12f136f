"""Close an epoch: freeze its jobs, publish the epoch file, redeem vouchers, post the root.

Steps, each safe to repeat after a crash at any point:
1. ``open_epoch``: the decided jobs not yet in an epoch become epoch n (status ``building``).
2. ``build_document``: the epoch file from the database alone (deterministic): every job
   with its votes and signatures, the voucher redeemed per client, the leaves of cumulative
   earnings and the totals. Conservation is checked before anything is sent.
3. The file is written (canonical bytes, keccak256, fsync'd) while, on another thread,
   ``redeem_vouchers`` redeems each client's voucher up to what it was charged (the vault
   skips what is already redeemed): the vouchers come from the document, not the file, and
   the two take about the same time at 100,000 jobs (docs/performance.md, *Epoch close*).
4. ``post_root``: the roots and the file's hash, unless the chain already has them; only
   once the file is on disk. (``settle_on_chain`` is steps 3 and 4 on one thread.)
5. The epoch is marked ``posted``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from sqlalchemy import CursorResult, update
from sqlalchemy import select as select_columns  # a Core select of any number of columns
from sqlalchemy.exc import SQLAlchemyError
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
    """The epoch being built, or a new one holding every decided job not yet in an epoch
    (frozen with one ``UPDATE``), or None when none of them was accepted or no contributor
    has earned a wei yet (an earnings tree needs a leaf). The full invariants, the journal
    replay included, are checked before the epoch is returned: what follows goes on chain."""
    building = session.exec(select(Epoch).where(Epoch.status == EpochStatus.BUILDING)).first()
    if building is not None:
        return building
    unfrozen = col(Job.epoch).is_(None)
    accepted = select(Job.id).where(unfrozen, Job.status == JobStatus.ACCEPTED).limit(1)
    if session.exec(accepted).first() is None:
        return None
    if session.exec(select(Transfer.id).where(Transfer.kind == TransferKind.PAY)).first() is None:
        return None  # no contributor has earned a wei yet: an earnings tree needs a leaf
    last = session.exec(select(func.max(Epoch.number))).one() or 0
    epoch = Epoch(number=last + 1, jobs=0)
    session.add(epoch)
    session.flush()
    frozen: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Job)
        .where(unfrozen, col(Job.status).in_([JobStatus.ACCEPTED, JobStatus.FAILED]))
        .values(epoch=epoch.number)
    )
    epoch.jobs = frozen.rowcount
    session.add(epoch)
    session.flush()
    invariants.check_full(session)
    return epoch


class _EpochJob(NamedTuple):
    """The columns of a job that the epoch document and the results tree read."""

    id: str
    client: str
    model_hash: str
    input_hash: str
    rows: int
    price_wei: int
    voucher_cumulative_wei: int
    status: str
    failure: str | None
    result_hash: str | None
    fingerprint: str | None


class DecidedJob(Protocol):
    """What ``result_leaves`` reads of a job: a ``Job`` row or the epoch's own columns."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def model_hash(self) -> str: ...
    @property
    def input_hash(self) -> str: ...
    @property
    def fingerprint(self) -> str | None: ...
    @property
    def result_hash(self) -> str | None: ...


_VOTE_COLUMNS = (
    col(Assignment.id),
    col(Assignment.job_id),
    col(Assignment.worker),
    col(Assignment.contributor),
    col(Assignment.result_hash),
    col(Assignment.fingerprint),
    col(Assignment.fingerprint_json),
    col(Assignment.signature),
)


Vote = Sequence[Any]  # a row of _VOTE_COLUMNS


def _all_votes(session: Session, n: int) -> dict[str, list[Vote]]:
    """The submitted votes of every job of epoch ``n``, each job's by worker: one query,
    which reads them in that order from the (job, worker) unique index."""
    of_epoch = col(Assignment.job_id).in_(select(Job.id).where(Job.epoch == n))
    rows = (
        session.connection()
        .execute(  # Core rows: the ORM's loading is not needed
            select_columns(*_VOTE_COLUMNS)
            .where(of_epoch, col(Assignment.status) == AssignmentStatus.SUBMITTED)
            .order_by(col(Assignment.job_id), col(Assignment.worker))
        )
        .all()
    )
    grouped: dict[str, list[Vote]] = {
        job_id: list(votes) for job_id, votes in groupby(rows, key=itemgetter(1))
    }
    return grouped


def _contested(rows: list[Vote]) -> bool:
    """More than one answer and more than one fingerprint class: then each vote carries its
    revealed outputs, so the auditor can apply the tolerance rule as the reconciler did."""
    return len({(r[5], r[4]) for r in rows}) > 1 and len({r[5] for r in rows}) > 1


def _votes(
    rows: list[Vote], outputs: dict[int, str | None], contested: bool, infos: dict[str, Any]
) -> list[dict[str, Any]]:
    """A job's votes in the document; ``outputs`` by assignment id when ``contested``;
    ``infos``: fingerprints already parsed (most votes share a few), copied for each vote."""
    votes = []
    for aid, _job, worker, contributor, result_hash, fingerprint, info, signature in rows:
        raw_info = info or "{}"
        parsed = infos.get(raw_info)
        if parsed is None:
            parsed = infos[raw_info] = json.loads(raw_info)
        vote = {
            "worker": worker,
            "contributor": contributor,
            "result_hash": result_hash,
            "fingerprint": fingerprint,
            "fingerprint_info": dict(parsed) if type(parsed) is dict else json.loads(raw_info),
            "signature": signature,
        }
        if contested:
            raw = outputs.get(aid)
            vote["outputs"] = json.loads(raw) if raw else None
        votes.append(vote)
    return votes


def _outputs(session: Session, assignment_ids: list[int]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for start in range(0, len(assignment_ids), 500):
        chunk = assignment_ids[start : start + 500]
        found.update(
            session.execute(
                select(col(Assignment.id), col(Assignment.outputs_json)).where(
                    col(Assignment.id).in_(chunk)
                )
            ).all()
        )
    return found


def _inputs(session: Session, job_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        found.update(
            session.execute(
                select(col(Job.id), col(Job.inputs_json)).where(col(Job.id).in_(chunk))
            ).all()
        )
    return found


def _input_row_hashes(ctx: Context, inputs_json: str) -> list[str]:
    inputs = {
        k: tensors.decode(v, max_bytes=ctx.settings.max_tensor_bytes)
        for k, v in json.loads(inputs_json).items()
    }
    return ["0x" + h.hex() for h in hashing.input_row_hashes(inputs)]


def _job_entry(
    job: _EpochJob, votes: list[dict[str, Any]], transfers: list[tuple[str, str, int]]
) -> dict[str, Any]:
    """``transfers``: the job's pays and fee as (kind, credited account, amount)."""
    paid = {
        credit.split(":", 1)[1]: str(amount) for kind, credit, amount in transfers if kind == "pay"
    }
    fee = sum(amount for kind, _, amount in transfers if kind == "fee")
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


_PAY_AND_FEE = (TransferKind.PAY, TransferKind.FEE)


Transfers = dict[str, list[tuple[str, str, int]]]  # by job: (kind, credited account, amount)


def _cumulative(
    session: Session, number: int, jobs: list[_EpochJob], transfers: Transfers
) -> tuple[dict[str, int], int, dict[str, int]]:
    """Through epoch ``number``: earnings per contributor, fees, charges per client; the
    epochs before it summed by the database, this one's ``jobs`` and ``transfers`` here."""
    earlier = col(Job.epoch) < number
    of_earlier = col(Transfer.job_id).in_(select(Job.id).where(earlier))  # by index, not a scan
    credit, amount = col(Transfer.credit_account_id), col(Transfer.amount_wei)
    earned: dict[str, int] = defaultdict(int)
    for account, total in invariants.sum_wei_by(
        session, credit, amount, of_earlier, col(Transfer.kind) == TransferKind.PAY
    ).items():
        earned[account.split(":", 1)[1]] += total
    fee_totals = invariants.sum_wei_by(
        session, credit, amount, of_earlier, col(Transfer.kind) == TransferKind.FEE
    )
    fees = sum(fee_totals.values())
    for job_transfers in transfers.values():
        for kind, account, paid in job_transfers:
            if kind == "pay":
                earned[account.split(":", 1)[1]] += paid
            else:
                fees += paid
    charged: dict[str, int] = defaultdict(int)
    charged.update(
        invariants.sum_wei_by(
            session,
            col(Job.client),
            col(Job.price_wei),
            earlier,
            col(Job.status) == JobStatus.ACCEPTED,
        )
    )
    for job in jobs:
        if job.status == JobStatus.ACCEPTED:
            charged[job.client] += job.price_wei
    return dict(earned), fees, dict(charged)


_VOUCHER_COLUMNS = (
    col(Job.client),
    col(Job.voucher_cumulative_wei),
    col(Job.voucher_expiry),
    col(Job.voucher_signature),
)


def _best_vouchers(
    session: Session, number: int, jobs: list[_EpochJob], charged: dict[str, int]
) -> dict[str, tuple[int, int, str]]:
    """Each charged client's voucher (cumulative amount, expiry, signature) with the highest
    cumulative amount among its jobs in an epoch so far: those of earlier epochs read here,
    this epoch's among its ``jobs`` (job ids derive from vouchers, so no two of a client's
    jobs tie)."""
    best: dict[str, tuple[int, int, str]] = {}
    newest: dict[str, tuple[int, str]] = {}
    for j in jobs:
        if j.client in charged and (
            j.client not in newest or j.voucher_cumulative_wei > newest[j.client][0]
        ):
            newest[j.client] = (j.voucher_cumulative_wei, j.id)
    ids = [job_id for _, job_id in newest.values()]
    earlier = session.execute(select_columns(*_VOUCHER_COLUMNS).where(col(Job.epoch) < number))
    current = (
        row
        for start in range(0, len(ids), 500)
        for row in session.execute(
            select_columns(*_VOUCHER_COLUMNS).where(col(Job.id).in_(ids[start : start + 500]))
        )
    )
    for rows in (earlier, current):
        for client, cumulative, expiry, signature in rows:
            if client in charged and (client not in best or cumulative > best[client][0]):
                best[client] = (cumulative, expiry, signature)
    return best


def _vouchers(
    session: Session, number: int, jobs: list[_EpochJob], charged: dict[str, int]
) -> list[dict[str, Any]]:
    best = _best_vouchers(session, number, jobs, charged)
    out = []
    for client in sorted(charged):
        cumulative, expiry, signature = best[client]
        if charged[client] > cumulative:
            raise InvariantViolation(
                f"client_within_voucher: {client} charged above its voucher", client=client
            )
        out.append(
            {
                "client": client,
                "cumulative_amount_wei": str(cumulative),
                "expiry": expiry,
                "signature": signature,
                "redeem_cumulative_wei": str(charged[client]),
            }
        )
    return out


def _epoch_jobs(session: Session, n: int) -> list[_EpochJob]:
    rows = session.connection().execute(
        select_columns(*(col(getattr(Job, f)) for f in _EpochJob._fields))
        .where(col(Job.epoch) == n)
        .order_by(col(Job.id))
    )
    return [_EpochJob(*row) for row in rows]


def _epoch_transfers(session: Session, n: int) -> Transfers:
    """The pays and fees of epoch ``n``'s jobs, by job: (kind, credited account, amount)."""
    transfers: Transfers = defaultdict(list)
    for job_id, kind, credit, amount in session.connection().execute(
        select(
            col(Transfer.job_id),
            col(Transfer.kind),
            col(Transfer.credit_account_id),
            col(Transfer.amount_wei),
        ).where(
            col(Transfer.job_id).in_(select(Job.id).where(Job.epoch == n)),
            col(Transfer.kind).in_(_PAY_AND_FEE),
        )
    ):
        transfers[str(job_id)].append((kind, credit, amount))  # a pay or fee names its job
    return transfers


def _entries(
    session: Session, ctx: Context, n: int, jobs: list[_EpochJob], transfers: Transfers
) -> list[dict[str, Any]]:
    """Every job of the epoch with its votes and its pays: three queries whatever the size
    (the votes, then the outputs and inputs of the few contested jobs)."""
    votes = _all_votes(session, n)
    contested = [j.id for j in jobs if _contested(votes.get(j.id, []))]
    outputs = _outputs(session, [row[0] for jid in contested for row in votes[jid]])
    inputs = _inputs(session, contested)
    entries = []
    infos: dict[str, Any] = {}
    for j in jobs:
        rows = votes.get(j.id, [])
        is_contested = j.id in inputs
        entry = _job_entry(j, _votes(rows, outputs, is_contested, infos), transfers.get(j.id, []))
        if is_contested:
            entry["input_row_hashes"] = _input_row_hashes(ctx, inputs[j.id])
        entries.append(entry)
    return entries


def build_document(session: Session, ctx: Context, epoch: Epoch) -> dict[str, Any]:
    n = epoch.number
    jobs = _epoch_jobs(session, n)
    transfers = _epoch_transfers(session, n)
    earned, fees, charged = _cumulative(session, n, jobs, transfers)
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
    entries = _entries(session, ctx, n, jobs, transfers)
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
        "vouchers": _vouchers(session, n, jobs, charged),
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


def result_leaves(jobs: Sequence[DecidedJob]) -> list[merkle.ResultLeaf]:
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
    return redeem_vouchers(ctx, doc) + post_root(ctx, doc, file_hash)


def redeem_vouchers(ctx: Context, doc: dict[str, Any], *, ask_chain: bool = True) -> int:
    """The voucher of each client charged in this epoch redeemed up to its cumulative charge
    (the vault skips what it has redeemed already: idempotent). Returns the gas spent.

    A client the epoch did not charge keeps the target of the epoch that last charged it,
    which that epoch redeemed before its root could be posted: it is left out. ``ask_chain``
    also leaves out what the vault has redeemed up to the target already: a close resumed
    after a crash may have redeemed some; a fresh epoch has redeemed nothing (a call per
    client, about 5 ms each on Hardhat, saved)."""
    chain = ctx.chain
    gas_before = chain.gas_used
    charged_now = {
        e["client"].lower()
        for e in doc["jobs"]
        if e["status"] == JobStatus.ACCEPTED and int(e["price_wei"]) > 0
    }
    vouchers = [v for v in doc["vouchers"] if v["client"].lower() in charged_now]
    redeemed = (
        chain.call_many(
            [chain.vault.functions.redeemedOf(v["client"]) for v in vouchers], "redeemedOf"
        )
        if ask_chain
        else [0] * len(vouchers)
    )
    items = []
    for v, already in zip(vouchers, redeemed, strict=True):
        target = int(v["redeem_cumulative_wei"])
        if target > int(already):
            voucher = (
                Web3.to_checksum_address(v["client"]),
                int(v["cumulative_amount_wei"]),
                int(v["expiry"]),
            )
            items.append((voucher, bytes.fromhex(v["signature"].removeprefix("0x")), target))
    size = ctx.settings.redeem_batch_size
    for start in range(0, len(items), size):
        chain.transact(chain.vault.functions.redeem(items[start : start + size]), "redeem")
    return chain.gas_used - gas_before


def post_root(ctx: Context, doc: dict[str, Any], file_hash: bytes) -> int:
    """``postEpoch`` with the document's roots and totals and the file's hash, unless the
    chain has this epoch already (then it must be the same). Returns the gas spent."""
    chain = ctx.chain
    gas_before = chain.gas_used
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


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the block. Building an epoch document makes millions
    of small dicts, lists and tuples that refcounting frees and none of which form cycles;
    the collector's full passes over them, each longer as the document grows, cost a fifth
    of building it at 100,000 jobs (measured: docs/performance.md, *Epoch close*)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


SQLITE_MMAP_BYTES = 1 << 30  # while an epoch is built: the database file mapped, up to this
SQLITE_CACHE_KIB = 256 * 1024  # ... and the connection's page cache (SQLite's default: 2 MiB)


@contextmanager
def _sqlite_pages_in_memory(session: Session) -> Iterator[None]:
    """On SQLite, for the block, the database file mapped into memory and a larger page
    cache on this session's connection, then its settings put back. Building an epoch reads
    each of its jobs, votes and transfers through an index, a page at a time; with the
    default cache most of those pages come from a system call each (measured at 100,000
    jobs: docs/performance.md, *Epoch close*)."""
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    conn = session.connection()
    before = {
        name: int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())
        for name in ("mmap_size", "cache_size")
    }
    conn.exec_driver_sql(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
    conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    try:
        yield
    finally:
        try:
            for name, value in before.items():
                conn.exec_driver_sql(f"PRAGMA {name} = {value}")
        except SQLAlchemyError:  # never hide what went wrong in the block
            logger.warning("could not put back the connection's %s", name, exc_info=True)


def close_epoch(ctx: Context) -> EpochOutcome | None:
    """Close and settle the next epoch, or finish one a crash left half done."""
    with _collector_paused():
        with session_scope(ctx.engine) as session, _sqlite_pages_in_memory(session):
            building = select(Epoch.number).where(Epoch.status == EpochStatus.BUILDING)
            resumed = session.exec(building).first() is not None  # a crash left it half done
            epoch = open_epoch(session)
            if epoch is None:
                return None
            doc = build_document(session, ctx, epoch)
    with ThreadPoolExecutor(2, thread_name_prefix=f"epoch-{epoch.number}") as pool:
        # on the chain, mostly waiting: beside the file's encoding, hash and write
        redeemed = pool.submit(redeem_vouchers, ctx, doc, ask_chain=resumed)
        with _collector_paused():
            raw = epochfile.canonical_bytes(doc)
        hashed = pool.submit(epochfile.file_hash, raw)  # keccak and the write, side by side
        _write_atomic(epoch_path(ctx, epoch.number), raw)
        digest = hashed.result()
        gas = redeemed.result()
    gas += post_root(ctx, doc, digest)
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
