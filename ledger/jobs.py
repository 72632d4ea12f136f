"""A client's paid job: check the voucher, hold the price, assign replicas. One unit of work:
either all of it happens or nothing does (no charge without assigned replicas)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from ledger import invariants, journal, scheduler
from ledger.auth import checked_address
from ledger.context import Context
from ledger.errors import (
    Conflict,
    InsufficientFunds,
    InvalidRequest,
    NoCapacity,
    PaymentRequired,
    VoucherInvalid,
)
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Client, Job
from protocol import hashing, tensors
from protocol.eip712 import Voucher, job_id, recover_voucher
from protocol.errors import ProtocolError
from protocol.manifest import Manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    model_hash: str
    inputs: dict[str, Any]
    client: str
    cumulative_amount_wei: int
    expiry: int
    signature: str


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


def _sync_deposits(session: Session, ctx: Context, client: Client) -> None:
    """Bring the journal up to the client's total deposits on chain (idempotent by total)."""
    total = int(
        ctx.chain.call(
            ctx.chain.vault.functions.totalDepositedOf(client.address), "totalDepositedOf"
        )
    )
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
        session.add(client)


def _hold(session: Session, ctx: Context, client: Client, jid: str, price: int) -> None:
    spec = TransferSpec(
        f"hold:{jid}",
        journal.client_account(client.address),
        journal.ESCROW,
        price,
        TransferKind.HOLD,
        jid,
    )
    try:  # post() refuses before it changes anything, so a retry needs no savepoint
        journal.post(session, spec)
        return
    except InsufficientFunds:
        _sync_deposits(session, ctx, client)
    try:
        journal.post(session, spec)
    except InsufficientFunds as exc:
        raise PaymentRequired(
            f"the deposit does not cover {price} wei more: "
            f"{exc.data.get('available', 0)} wei available",
            needed=price,
            available=exc.data.get("available", 0),
        ) from exc


def create_job(session: Session, ctx: Context, req: JobRequest) -> tuple[Job, bool]:
    """Return (job, created). A retry with the same voucher and input returns the same job."""
    req = JobRequest(**{**req.__dict__, "client": checked_address(req.client)})
    manifest = _manifest(ctx, req.model_hash)
    arrays, rows = _decode_inputs(ctx, manifest, req.inputs)
    voucher, sig = _check_voucher(ctx, req)
    jid = "0x" + job_id(ctx.deployment.vault, req.client, req.cumulative_amount_wei).hex()
    in_hash = "0x" + hashing.input_hash(arrays).hex()
    # One request of a client at a time: lock its account before reading its jobs, what it
    # owes and its highest voucher, so a concurrent request is judged on committed figures.
    journal.lock_account(session, journal.client_account(req.client))
    existing = session.get(Job, jid)
    if existing is not None:
        if existing.input_hash != in_hash or existing.model_hash != "0x" + manifest.sha256:
            raise Conflict("this voucher already paid for another job", code="voucher_reused")
        return existing, False  # a retry: the voucher was checked when the job was made
    if req.expiry < int(time.time()) + ctx.settings.voucher_min_ttl_s:
        raise VoucherInvalid(
            f"the voucher expires too soon: at least {ctx.settings.voucher_min_ttl_s} s are needed",
            code="voucher_expired",
        )
    client = session.get(Client, req.client) or Client(address=req.client)
    if voucher.cumulative_amount <= client.max_voucher_wei:
        raise Conflict(
            f"the voucher's cumulative amount must exceed {client.max_voucher_wei} wei",
            code="voucher_not_increasing",
            max_voucher_wei=client.max_voucher_wei,
        )
    price = manifest.price_wei(rows)
    committed = client.deposited_wei - journal.balance(session, journal.client_account(req.client))
    if voucher.cumulative_amount < committed + price:
        raise VoucherInvalid(
            f"the voucher covers {voucher.cumulative_amount} "
            f"wei; {committed + price} wei are owed with this job",
            code="voucher_too_low",
            needed=committed + price,
        )
    _hold(session, ctx, client, jid, price)
    workers = scheduler.choose(session, ctx, ctx.settings.replicas)
    if len(workers) < ctx.settings.replicas:
        raise NoCapacity(
            f"{len(workers)} eligible workers of distinct "
            f"contributors; {ctx.settings.replicas} needed"
        )
    client.max_voucher_wei = voucher.cumulative_amount
    session.add(client)
    job = Job(
        id=jid,
        client=req.client,
        model_hash="0x" + manifest.sha256,
        input_hash=in_hash,
        rows=rows,
        price_wei=price,
        voucher_cumulative_wei=voucher.cumulative_amount,
        voucher_expiry=voucher.expiry,
        voucher_signature="0x" + sig.hex(),
        inputs_json=json.dumps(req.inputs, separators=(",", ":")),
        replicas_wanted=ctx.settings.replicas,
    )
    session.add(job)
    scheduler.assign(session, ctx, jid, workers)
    session.flush()
    invariants.check_money(session)
    return job, True
