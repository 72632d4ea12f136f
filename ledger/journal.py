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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn

from sqlalchemy import bindparam, text
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select

from ledger.db import insert_many
from ledger.errors import InsufficientFunds, TransferConflict
from ledger.models import Account, AccountKind, Transfer, now_s

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


def _check_shape(spec: TransferSpec) -> None:
    if spec.amount_wei <= 0:
        raise ValueError(f"transfer {spec.id} must move a positive amount")
    if spec.debit == spec.credit:
        raise ValueError(f"transfer {spec.id} debits and credits the same account")
    _kind_of(spec.debit), _kind_of(spec.credit)  # unknown account names are refused


def _refuse(spec: TransferSpec, available: int) -> NoReturn:
    raise InsufficientFunds(
        f"{spec.debit} holds {available} wei, transfer {spec.id} needs {spec.amount_wei}",
        account=spec.debit,
        needed=spec.amount_wei,
        available=available,
    )


def _same(existing: Transfer | TransferSpec, spec: TransferSpec) -> PostResult:
    if isinstance(existing, TransferSpec):
        same = existing == spec
    else:
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
    _check_shape(spec)
    existing = _existing(session, spec.id)  # transfers never change: no lock needed to see one
    if existing is not None:
        return _same(existing, spec)
    locked = {i: lock_account(session, i) for i in sorted((spec.debit, spec.credit))}
    existing = _existing(session, spec.id)  # committed meanwhile, while we waited for the locks
    if existing is not None:
        return _same(existing, spec)
    debit, credit = locked[spec.debit], locked[spec.credit]
    if debit.kind != AccountKind.SYSTEM and debit.balance_wei < spec.amount_wei:
        _refuse(spec, debit.balance_wei)
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


TRANSFER_COLUMNS = (
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount_wei",
    "kind",
    "job_id",
    "created_at",
)
_CHUNK = 500  # ids per IN (...) list: far below every database's limit on bound parameters


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# The statements of every request's path, built once: building a statement and its cache
# key cost about three times as much as running it (docs/performance.md, *Latency added*)
_ACCOUNTS_LOCKED = (
    select(Account.id, Account.kind, Account.balance_wei)
    .where(col(Account.id).in_(bindparam("ids", expanding=True)))
    .order_by(col(Account.id))
    .with_for_update()
)
_TRANSFERS_KNOWN = core_select(
    col(Transfer.id),
    col(Transfer.debit_account_id),
    col(Transfer.credit_account_id),
    col(Transfer.amount_wei),
    col(Transfer.kind),
    col(Transfer.job_id),
).where(col(Transfer.id).in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True, slots=True)
class Locked:
    """An account row as ``lock_accounts`` read it under its lock."""

    id: str
    kind: str
    balance_wei: int


def lock_accounts(session: Session, account_ids: Iterable[str]) -> dict[str, Locked]:
    """``lock_account`` for many accounts in a few statements: the rows, locked in id order
    for this unit of work, the missing ones created at zero. Read as plain rows, not ORM
    objects (building those was most of the cost of locking a few hundred accounts)."""
    _serialise(session)
    wanted = sorted(set(account_ids))
    found: dict[str, Locked] = {}

    def load(ids: list[str]) -> None:
        for chunk in _chunks(ids):
            rows = session.execute(_ACCOUNTS_LOCKED, {"ids": chunk}).all()
            found.update((i, Locked(i, k, b)) for i, k, b in rows)

    load(wanted)
    missing = [i for i in wanted if i not in found]
    if missing:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        for chunk in _chunks(missing):
            rows = [{"id": i, "kind": _kind_of(i), "balance_wei": 0} for i in chunk]
            session.execute(
                insert(Account).values(rows).on_conflict_do_nothing(index_elements=["id"])
            )
        load(missing)
    return found


_BALANCE_UPDATE = (
    Account.__table__.update()  # type: ignore[attr-defined]
    .where(Account.__table__.c.id == bindparam("account_id"))  # type: ignore[attr-defined]
    .values(balance_wei=bindparam("balance"))
)


def _write_balances(session: Session, balances: dict[str, int]) -> None:
    """Store new balances in one executemany, and in any copy of the accounts this session
    has loaded (as committed values: they are written already)."""
    if not balances:  # transfers that net to zero on every account, e.g. a -> b -> a
        return
    session.connection().execute(
        _BALANCE_UPDATE, [{"account_id": i, "balance": b} for i, b in balances.items()]
    )
    for account_id, balance_wei in balances.items():
        loaded = session.identity_map.get(identity_key(Account, account_id))
        if loaded is not None:
            set_committed_value(loaded, "balance_wei", balance_wei)


def post_batch(
    session: Session, specs: list[TransferSpec], locked: dict[str, Locked] | None = None
) -> list[PostResult]:
    """Apply ``specs`` in order inside the caller's unit of work, with the same outcome as
    ``post`` on each in turn (a known id reports ``exists``, also one repeated inside the
    batch), in a few statements however long the batch: the accounts are locked at once,
    the known ids read at once, the new transfers inserted at once. The first refusal
    (``InsufficientFunds``, ``TransferConflict``, ``ValueError``) raises before anything
    has changed, so the caller may go on or roll back. ``locked``: the batch's accounts as
    the caller locked them by ``lock_accounts`` in this unit of work and has not moved since
    (a statement fewer); any of them missing and they are all locked here."""
    malformed: TransferSpec | None = None
    for n, spec in enumerate(specs):  # refused in order: an earlier overdraft comes first
        try:
            _check_shape(spec)
        except ValueError:
            specs, malformed = specs[:n], spec
            break
    ids = {i for s in specs for i in (s.debit, s.credit)}
    if locked is not None and ids <= locked.keys():
        accounts = locked
    else:
        accounts = lock_accounts(session, ids)
    known: dict[str, TransferSpec] = {}
    for chunk in _chunks(sorted({s.id for s in specs})):  # looked up under the locks
        found = session.execute(_TRANSFERS_KNOWN, {"ids": chunk}).all()
        known.update(
            (i, TransferSpec(i, debit, credit, amount, TransferKind(kind), job))
            for i, debit, credit, amount, kind, job in found
        )
    balances = {i: a.balance_wei for i, a in accounts.items()}
    results: list[PostResult] = []
    created: list[TransferSpec] = []
    for spec in specs:
        if (seen := known.get(spec.id)) is not None:
            results.append(_same(seen, spec))
            continue
        if (
            accounts[spec.debit].kind != AccountKind.SYSTEM
            and balances[spec.debit] < spec.amount_wei
        ):
            _refuse(spec, balances[spec.debit])
        balances[spec.debit] -= spec.amount_wei
        balances[spec.credit] += spec.amount_wei
        known[spec.id] = spec
        created.append(spec)
        results.append(PostResult.CREATED)
    if malformed is not None:
        _check_shape(malformed)  # raises: nothing above has been written
    if created:
        now = now_s()
        rows = [
            (t.id, t.debit, t.credit, t.amount_wei, str(t.kind), t.job_id, now) for t in created
        ]
        insert_many(session, Transfer.__table__, TRANSFER_COLUMNS, rows)  # type: ignore[attr-defined]
        _write_balances(
            session, {i: b for i, b in balances.items() if b != accounts[i].balance_wei}
        )
    return results
