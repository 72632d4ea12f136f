"""The double-entry journal: accounts and immutable transfers (TigerBeetle's vocabulary).

A transfer moves ``amount_wei`` from its debit account to its credit account, so every
transfer sums to zero and so does the whole journal. The caller chooses the transfer id,
which is the idempotency key: the same id with the same fields is a no-op reported as
``exists``; with different fields it is refused. Non-system balances never go negative.

System accounts: ``vault`` (the source of client deposits, seen on chain), ``escrow`` (prices
held for jobs not yet decided) and ``treasury`` (protocol fees).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.errors import InsufficientFunds, TransferConflict
from ledger.models import Account, AccountKind, Transfer

logger = logging.getLogger(__name__)

VAULT = "vault"
ESCROW = "escrow"
TREASURY = "treasury"
SYSTEM_ACCOUNTS = (VAULT, ESCROW, TREASURY)


def client_account(address: str) -> str:
    return f"client:{address.lower()}"


def contributor_account(address: str) -> str:
    return f"contributor:{address.lower()}"


class TransferKind(StrEnum):
    DEPOSIT = "deposit"
    HOLD = "hold"
    PAY = "pay"
    FEE = "fee"
    REFUND = "refund"


class PostResult(StrEnum):
    CREATED = "created"
    EXISTS = "exists"


@dataclass(frozen=True)
class TransferSpec:
    id: str
    debit: str
    credit: str
    amount_wei: int
    kind: TransferKind
    job_id: str | None = None


def _kind_of(account_id: str) -> AccountKind:
    if account_id in SYSTEM_ACCOUNTS:
        return AccountKind.SYSTEM
    if account_id.startswith("client:"):
        return AccountKind.CLIENT
    if account_id.startswith("contributor:"):
        return AccountKind.CONTRIBUTOR
    raise ValueError(f"unknown account {account_id!r}")


JOURNAL_LOCK = 0x1D6E8  # PostgreSQL advisory lock: one money-moving unit of work at a time


def _serialise(session: Session) -> None:
    """Units of work that move money run one at a time (on SQLite, BEGIN IMMEDIATE does
    this already). Row locks alone could deadlock when two units lock the same accounts in
    different orders (a reconcile paying contributors against a job's hold and refund)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    transaction = session.get_transaction()
    if transaction is not None and session.info.get("journal_lock") is not transaction:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOURNAL_LOCK})
        session.info["journal_lock"] = transaction


def lock_account(session: Session, account_id: str) -> Account:
    """The account row, locked for this unit of work; created at zero if new (an insert that
    does nothing if another unit of work created it first, so creation never races)."""
    _serialise(session)
    locked = select(Account).where(Account.id == account_id).with_for_update()
    locked = locked.execution_options(populate_existing=True)  # not a stale loaded copy
    account = session.exec(locked).first()
    if account is not None:
        return account
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(Account)
        .values(id=account_id, kind=_kind_of(account_id), balance_wei=0)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return session.exec(locked).one()


def balance(session: Session, account_id: str) -> int:
    account = session.get(Account, account_id)
    return account.balance_wei if account else 0


def _same(existing: Transfer, spec: TransferSpec) -> PostResult:
    same = (
        existing.debit_account_id == spec.debit
        and existing.credit_account_id == spec.credit
        and existing.amount_wei == spec.amount_wei
        and existing.kind == spec.kind
        and existing.job_id == spec.job_id
    )
    if not same:
        raise TransferConflict(f"transfer {spec.id} exists with other fields", id=spec.id)
    return PostResult.EXISTS


def _existing(session: Session, transfer_id: str) -> Transfer | None:
    return session.exec(
        select(Transfer).where(Transfer.id == transfer_id).execution_options(populate_existing=True)
    ).first()


def post(session: Session, spec: TransferSpec) -> PostResult:
    """Apply one transfer inside the caller's unit of work (which commits or rolls back).

    A known id is answered before anything is locked or created. Otherwise both accounts are
    locked (money-moving units run one at a time) and the id is looked up again, so concurrent
    replays of one transfer create it once and the others report ``exists``; the primary key
    backs this up."""
    if spec.amount_wei <= 0:
        raise ValueError(f"transfer {spec.id} must move a positive amount")
    if spec.debit == spec.credit:
        raise ValueError(f"transfer {spec.id} debits and credits the same account")
    existing = _existing(session, spec.id)  # transfers never change: no lock needed to see one
    if existing is not None:
        return _same(existing, spec)
    locked = {i: lock_account(session, i) for i in sorted((spec.debit, spec.credit))}
    existing = _existing(session, spec.id)  # committed meanwhile, while we waited for the locks
    if existing is not None:
        return _same(existing, spec)
    debit, credit = locked[spec.debit], locked[spec.credit]
    if debit.kind != AccountKind.SYSTEM and debit.balance_wei < spec.amount_wei:
        raise InsufficientFunds(
            f"{spec.debit} holds {debit.balance_wei} wei, "
            f"transfer {spec.id} needs {spec.amount_wei}",
            account=spec.debit,
            needed=spec.amount_wei,
            available=debit.balance_wei,
        )
    try:
        with session.begin_nested():
            debit.balance_wei -= spec.amount_wei
            credit.balance_wei += spec.amount_wei
            session.add(
                Transfer(
                    id=spec.id,
                    debit_account_id=spec.debit,
                    credit_account_id=spec.credit,
                    amount_wei=spec.amount_wei,
                    kind=spec.kind,
                    job_id=spec.job_id,
                )
            )
    except IntegrityError:  # the same id, committed meanwhile under other accounts' locks
        existing = _existing(session, spec.id)
        if existing is None:
            raise
        return _same(existing, spec)
    return PostResult.CREATED


def post_all(session: Session, specs: list[TransferSpec]) -> list[PostResult]:
    return [post(session, spec) for spec in specs]
