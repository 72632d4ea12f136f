"""A client's paid job: check the voucher, hold the price, assign replicas. One unit of work:
either all of it happens or nothing does (no charge without assigned replicas)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from ledger import invariants, journal, notify, scheduler
from ledger.auth import checked_address
from ledger.chain.projection import deposits_for_payment
from ledger.context import Context
from ledger.db import insert_many
from ledger.errors import (
    Conflict,
    InvalidRequest,
    LedgerError,
    NoCapacity,
    PaymentRequired,
    VoucherInvalid,
)
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Assignment, AssignmentStatus, Client, Job, JobStatus
from protocol import hashing, tensors, text
from protocol.eip712 import Voucher, job_id, recover_voucher
from protocol.errors import ProtocolError
from protocol.manifest import Manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    model_hash: str
    inputs: dict[str, Any] | None  # wire tensors, for a model whose input_kind is tensor
    client: str
    cumulative_amount_wei: int
    expiry: int
    signature: str
    texts: tuple[str, ...] | None = None  # for a model whose input_kind is text


def _manifest(ctx: Context, model_hash: str) -> Manifest:
    manifest = ctx.models.get(model_hash.lower().removeprefix("0x"))
    if manifest is None:
        raise InvalidRequest(f"unknown model {model_hash}", code="unknown_model")
    return manifest


def _decode_inputs(
    ctx: Context, manifest: Manifest, wire: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    if not isinstance(wire, dict):
        raise InvalidRequest("inputs must be an object of named tensors", code="invalid_tensor")
    try:
        arrays = {
            str(k): tensors.decode(v, max_bytes=ctx.settings.max_tensor_bytes)
            for k, v in wire.items()
        }
        return arrays, manifest.validate_inputs(arrays)
    except ProtocolError as exc:
        raise InvalidRequest(exc.detail, code=exc.code) from exc


def _wrong_input_kind(manifest: Manifest, field: str) -> InvalidRequest:
    return InvalidRequest(
        f"model {manifest.name} takes {manifest.input_kind} input: send {field} only",
        code="wrong_input_kind",
    )


def _job_inputs(
    ctx: Context, manifest: Manifest, req: JobRequest
) -> tuple[JobRequest, dict[str, Any], int]:
    """The job's tensors and rows. A text model's texts are tokenized here, and their
    tokens' wire form takes the place of the request's inputs: the job stores, hashes and
    hands out tensors whatever the client sent."""
    if manifest.text is None:
        if req.inputs is None or req.texts is not None:
            raise _wrong_input_kind(manifest, "inputs")
        return req, *_decode_inputs(ctx, manifest, req.inputs)
    if req.texts is None or req.inputs is not None:
        raise _wrong_input_kind(manifest, "texts")
    try:
        arrays = text.encode(manifest, req.texts)
        rows = manifest.validate_inputs(arrays)
    except ProtocolError as exc:
        raise InvalidRequest(exc.detail, code=exc.code) from exc
    wire = {name: tensors.encode(array) for name, array in arrays.items()}
    return replace(req, inputs=wire), arrays, rows


def _check_voucher(ctx: Context, req: JobRequest) -> tuple[Voucher, bytes]:
    if req.cumulative_amount_wei <= 0 or req.cumulative_amount_wei >= 2**256:
        raise VoucherInvalid(
            "the voucher's cumulative amount is out of range", code="voucher_amount"
        )
    voucher = Voucher(req.client, req.cumulative_amount_wei, req.expiry)
    try:
        sig = bytes.fromhex(req.signature.removeprefix("0x"))
        signer = recover_voucher(ctx.deployment.vault_domain, voucher, sig)
    except (ValueError, ProtocolError) as exc:
        raise VoucherInvalid(
            f"the voucher signature is invalid: {exc}", code="voucher_signature"
        ) from exc
    if signer != req.client:
        raise VoucherInvalid(
            f"the voucher is signed by {signer}, not {req.client}", code="voucher_signature"
        )
    return voucher, sig


@dataclass(slots=True)
class ClientState:
    """A client's row as one unit of work reads and changes it; written back at its end
    (``stored``: the figures as read, None for a client new to the ledger)."""

    address: str
    deposited_wei: int = 0
    max_voucher_wei: int = 0
    stored: tuple[int, int] | None = None

    @property
    def row(self) -> tuple[int, int]:
        return self.deposited_wei, self.max_voucher_wei


CLIENT_COLUMNS = ("address", "deposited_wei", "max_voucher_wei")
_CLIENT_UPDATE = (
    Client.__table__.update()  # type: ignore[attr-defined]
    .where(Client.__table__.c.address == bindparam("client"))  # type: ignore[attr-defined]
    .values(deposited_wei=bindparam("deposited"), max_voucher_wei=bindparam("max_voucher"))
)


# built once: the statements of every paid request's admission
_CLIENTS = select(Client.address, Client.deposited_wei, Client.max_voucher_wei).where(
    col(Client.address).in_(bindparam("addresses", expanding=True))
)
_JOBS_KNOWN = select(Job.id).where(col(Job.id).in_(bindparam("ids", expanding=True)))


def load_clients(session: Session, addresses: list[str]) -> dict[str, ClientState]:
    rows = session.connection().execute(_CLIENTS, {"addresses": addresses}).all()
    found = {a: ClientState(a, d, m, (d, m)) for a, d, m in rows}
    return {a: found.get(a) or ClientState(a) for a in addresses}


def store_clients(session: Session, clients: Iterable[ClientState]) -> None:
    """Write the clients that changed: the new ones in one INSERT, the others in one
    executemany UPDATE."""
    changed = [c for c in clients if c.row != c.stored]
    insert_many(
        session,
        Client.__table__,  # type: ignore[attr-defined]
        CLIENT_COLUMNS,
        [(c.address, *c.row) for c in changed if c.stored is None],
    )
    updates = [
        {"client": c.address, "deposited": c.deposited_wei, "max_voucher": c.max_voucher_wei}
        for c in changed
        if c.stored is not None
    ]
    if updates:
        session.connection().execute(_CLIENT_UPDATE, updates)


def _sync_deposits(session: Session, ctx: Context, client: ClientState) -> None:
    """Bring the journal up to the client's total deposits (idempotent by total), as the
    chain index holds them (``deposits_for_payment``), never by a chain call. If the index
    shows nothing new it first catches up within ``ctx.catch_up``'s limits (at most once a
    second per client and process), so a deposit mined before this request counts.

    In ``prod`` mode only confirmed deposits count (``index_confirmations`` blocks on top):
    a deposit a reorganisation removes must not have paid for work. A dev chain (Hardhat's
    automine, one block per transaction, no reorganisations) counts them as they are mined.
    """
    confirmed_only = ctx.settings.mode == "prod"
    total = deposits_for_payment(session, client.address, confirmed_only)
    if total <= client.deposited_wei:
        ctx.catch_up(session, f"client:{client.address.lower()}")
        total = deposits_for_payment(session, client.address, confirmed_only)
    if total > client.deposited_wei:
        journal.post(
            session,
            TransferSpec(
                id=f"deposit:{client.address.lower()}:{total}",
                debit=journal.VAULT,
                credit=journal.client_account(client.address),
                amount_wei=total - client.deposited_wei,
                kind=TransferKind.DEPOSIT,
            ),
        )
        client.deposited_wei = total


@dataclass(frozen=True)
class Prepared:
    """A request that passed every check needing no database: its model and inputs, and a
    voucher signed by its client. The CPU-heavy half of admission (decoding, signature
    recovery), done on the request's own thread before it joins a batch."""

    req: JobRequest
    manifest: Manifest
    rows: int
    voucher: Voucher
    signature: bytes
    job_id: str
    input_hash: str


def prepare(ctx: Context, req: JobRequest) -> Prepared:
    req = replace(req, client=checked_address(req.client))
    manifest = _manifest(ctx, req.model_hash)
    req, arrays, rows = _job_inputs(ctx, manifest, req)
    voucher, sig = _check_voucher(ctx, req)
    jid = "0x" + job_id(ctx.deployment.vault, req.client, req.cumulative_amount_wei).hex()
    in_hash = "0x" + hashing.input_hash(arrays).hex()
    return Prepared(req, manifest, rows, voucher, sig, jid, in_hash)


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job admitted in this unit of work, as written: the columns of ``Job`` without the
    cost of building an ORM object (which was most of admission's time)."""

    id: str
    client: str
    model_hash: str
    input_hash: str
    rows: int
    price_wei: int
    voucher_cumulative_wei: int
    voucher_expiry: int
    voucher_signature: str
    inputs_json: str
    replicas_wanted: int
    created_at: int
    status: str = JobStatus.PENDING.value
    result_hash: str | None = None
    fingerprint: str | None = None
    outputs_json: str | None = None
    failure: str | None = None
    epoch: int | None = None
    decided_at: int | None = None


ASSIGNMENT_COLUMNS = ("job_id", "worker", "contributor", "status", "deadline")
Outcome = tuple[Job | JobRow, bool] | LedgerError  # (job, created) or why it was refused


@dataclass
class _Admission:
    """One unit of work admitting many requests, in order, as if one at a time: the
    figures each check reads (balances, highest vouchers, work in flight) are kept up to
    date in memory, and every effect is written at the end in a few statements."""

    session: Session
    ctx: Context
    balances: dict[str, int]
    before: dict[str, int]  # balances of every account the unit may move, as locked
    clients: dict[str, ClientState]
    jobs: dict[str, Job | JobRow]
    pool: scheduler.Pool | None = None
    locked: dict[str, journal.Locked] | None = None  # the accounts as locked, while unmoved
    holds: list[TransferSpec] = field(default_factory=list)
    new_jobs: list[JobRow] = field(default_factory=list)
    new_assignments: list[tuple[str, str, str, str, int]] = field(default_factory=list)

    def admit(self, p: Prepared) -> tuple[Job | JobRow, bool]:
        req, ctx = p.req, self.ctx
        existing = self.jobs.get(p.job_id)
        if existing is not None:
            if (
                existing.input_hash != p.input_hash
                or existing.model_hash != "0x" + p.manifest.sha256
            ):
                raise Conflict("this voucher already paid for another job", code="voucher_reused")
            return existing, False  # a retry: the voucher was checked when the job was made
        if req.expiry < int(time.time()) + ctx.settings.voucher_min_ttl_s:
            raise VoucherInvalid(
                f"the voucher expires too soon: at least {ctx.settings.voucher_min_ttl_s} s "
                "are needed",
                code="voucher_expired",
            )
        client = self.clients[req.client]
        if p.voucher.cumulative_amount <= client.max_voucher_wei:
            raise Conflict(
                f"the voucher's cumulative amount must exceed {client.max_voucher_wei} wei",
                code="voucher_not_increasing",
                max_voucher_wei=client.max_voucher_wei,
            )
        price = p.manifest.price_wei(p.rows)
        owed = client.deposited_wei - self.balances[req.client] + price
        if p.voucher.cumulative_amount < owed:
            raise VoucherInvalid(
                f"the voucher covers {p.voucher.cumulative_amount} wei; {owed} wei are owed "
                "with this job",
                code="voucher_too_low",
                needed=owed,
            )
        if self.pool is None:
            self.pool = scheduler.Pool.load(self.session, ctx)
        workers = self.pool.choose(ctx.settings.replicas)
        if len(workers) < ctx.settings.replicas:
            raise NoCapacity(
                f"{len(workers)} eligible workers of distinct "
                f"contributors; {ctx.settings.replicas} needed"
            )
        if self.balances[req.client] < price:  # the last check: all others passed
            self._sync_or_refuse(client, price)
        workers = scheduler.adaptive(ctx, workers, self.pool.trust)
        self.pool.take(workers)
        self.balances[req.client] -= price
        client.max_voucher_wei = p.voucher.cumulative_amount
        self.holds.append(
            TransferSpec(
                f"hold:{p.job_id}",
                journal.client_account(req.client),
                journal.ESCROW,
                price,
                TransferKind.HOLD,
                p.job_id,
            )
        )
        now = int(time.time())
        job = JobRow(
            id=p.job_id,
            client=req.client,
            model_hash="0x" + p.manifest.sha256,
            input_hash=p.input_hash,
            rows=p.rows,
            price_wei=price,
            voucher_cumulative_wei=p.voucher.cumulative_amount,
            voucher_expiry=p.voucher.expiry,
            voucher_signature="0x" + p.signature.hex(),
            inputs_json=json.dumps(req.inputs, separators=(",", ":")),
            replicas_wanted=len(workers),
            created_at=now,
        )
        deadline = now + ctx.settings.assignment_deadline_s
        assigned = AssignmentStatus.ASSIGNED.value
        self.new_assignments.extend(
            (job.id, w.address, w.contributor, assigned, deadline) for w in workers
        )
        self.jobs[job.id] = job
        self.new_jobs.append(job)
        return job, True

    def _sync_or_refuse(self, client: ClientState, price: int) -> None:
        """Bring in deposits the journal has not seen yet; if they still do not cover
        ``price``, refuse with nothing changed (the synced deposit is rolled back too)."""
        before = client.deposited_wei
        self.locked = None  # a deposit synced moves the client's and the vault's balances
        savepoint = self.session.begin_nested()
        _sync_deposits(self.session, self.ctx, client)
        available = self.balances[client.address] + client.deposited_wei - before
        if available < price:
            savepoint.rollback()
            client.deposited_wei = before
            raise PaymentRequired(
                f"the deposit does not cover {price} wei more: {available} wei available",
                needed=price,
                available=available,
            )
        savepoint.commit()
        self.balances[client.address] = available

    def write(self) -> None:
        journal.post_batch(self.session, self.holds, self.locked)
        columns = JobRow.__slots__
        rows = [tuple(getattr(j, c) for c in columns) for j in self.new_jobs]
        insert_many(self.session, Job.__table__, columns, rows)  # type: ignore[attr-defined]
        insert_many(self.session, Assignment.__table__, ASSIGNMENT_COLUMNS, self.new_assignments)  # type: ignore[attr-defined]
        notify.work_for(
            self.session, self.ctx.settings.redis_url, (a[1] for a in self.new_assignments)
        )
        store_clients(self.session, self.clients.values())
        opened_wei = sum(j.price_wei for j in self.new_jobs)
        invariants.unit_conserves(self.session, self.before, escrow_change_wei=opened_wei)


def _known_jobs(session: Session, ids: set[str]) -> dict[str, Job | JobRow]:
    """The jobs of ``ids`` that exist already (retries), looked up by their ids alone: only
    the few found are loaded whole."""
    found = session.connection().execute(_JOBS_KNOWN, {"ids": sorted(ids)}).scalars().all()
    if not found:
        return {}
    return {j.id: j for j in session.exec(select(Job).where(col(Job.id).in_(found))).all()}


def admit(session: Session, ctx: Context, batch: list[Prepared]) -> list[Outcome]:
    """Admit prepared requests in order as one unit of work: each holds its price and gets
    its replicas, or is refused (``LedgerError``) having changed nothing, exactly as if it
    had come alone. The clients' accounts are locked first, so requests of one client are
    judged on committed figures whichever process admits them."""
    if not batch:
        return []
    clients = sorted({p.req.client for p in batch})
    # every account the unit may move: a deposit synced on the way comes from the vault
    accounts = journal.lock_accounts(
        session, [journal.ESCROW, journal.VAULT, *(journal.client_account(c) for c in clients)]
    )
    admission = _Admission(
        session,
        ctx,
        balances={c: accounts[journal.client_account(c)].balance_wei for c in clients},
        before={i: a.balance_wei for i, a in accounts.items()},
        clients=load_clients(session, clients),
        jobs=_known_jobs(session, {p.job_id for p in batch}),
        locked=accounts,
    )
    outcomes: list[Outcome] = []
    for p in batch:
        try:
            outcomes.append(admission.admit(p))
        except LedgerError as exc:
            outcomes.append(exc)
    admission.write()
    return outcomes


def create_job(session: Session, ctx: Context, req: JobRequest) -> tuple[Job | JobRow, bool]:
    """Return (job, created). A retry with the same voucher and input returns the same job."""
    (outcome,) = admit(session, ctx, [prepare(ctx, req)])
    if isinstance(outcome, LedgerError):
        raise outcome
    return outcome
