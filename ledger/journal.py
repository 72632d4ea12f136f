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


def lock_account(session: Session, account_id: str) -> Account:
    """The account row, locked for this unit of work (created at zero if new)."""
    account = session.exec(
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)  # the locked row, not a stale loaded copy
    ).first()
    if account is None:
        account = Account(id=account_id, kind=_kind_of(account_id), balance_wei=0)
        session.add(account)
    return account


def balance(session: Session, account_id: str) -> int:
    account = session.get(Account, account_id)
    return account.balance_wei if account else 0


def post(session: Session, spec: TransferSpec) -> PostResult:
    """Apply one transfer inside the caller's unit of work (which commits or rolls back)."""
    if spec.amount_wei <= 0:
        raise ValueError(f"transfer {spec.id} must move a positive amount")
    if spec.debit == spec.credit:
        raise ValueError(f"transfer {spec.id} debits and credits the same account")
    existing = session.get(Transfer, spec.id)
    if existing is not None:
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
    debit = lock_account(session, spec.debit)
    credit = lock_account(session, spec.credit)
    if debit.kind != AccountKind.SYSTEM and debit.balance_wei < spec.amount_wei:
        raise InsufficientFunds(
            f"{spec.debit} holds {debit.balance_wei} wei, "
            f"transfer {spec.id} needs {spec.amount_wei}",
            account=spec.debit,
            needed=spec.amount_wei,
            available=debit.balance_wei,
        )
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
    session.flush()
    return PostResult.CREATED


def post_all(session: Session, specs: list[TransferSpec]) -> list[PostResult]:
    return [post(session, spec) for spec in specs]
