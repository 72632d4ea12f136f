"""Named invariants, checked in code after every unit of work that moves money and before
anything is sent on chain. Each raises ``InvariantViolation`` (never ``assert``, which
``python -O`` strips) naming the check and carrying the figures that broke it.

- ``journal_balanced``: the balances of all accounts sum to zero.
- ``balances_match_transfers``: each account's stored balance equals the sum of its
  transfers (a full replay; run before anything goes on chain).
- ``no_negative_balance``: no client or contributor account is below zero.
- ``escrow_matches_open_jobs``: escrow holds exactly the prices of undecided jobs.
- ``unit_conserves``: the three checks above on what one unit of work changed (the
  accounts it locked, the escrow against the prices of the jobs it opened or decided); the
  hot paths, paid job admission and reconcile, run it instead of ``check_money``, whose
  queries read every account and every open job (see the function).
- ``epoch_conserves``: an epoch's cumulative payouts plus fees equal what is redeemed from
  clients, and the leaves sum to the cumulative payout (checked in ``ledger.epochs``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Integer, String, bindparam, cast, func, literal, type_coerce
from sqlalchemy import select as select_columns  # a Core select of any number of columns
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from ledger.errors import InvariantViolation
from ledger.journal import ESCROW
from ledger.models import Account, AccountKind, Job, JobStatus, Transfer


def _sum_wei(session: Session, column: Any, *where: Any) -> int:
    """The exact sum of a ``Wei`` column, added up by the database when it can do so
    exactly (PostgreSQL's NUMERIC; SQLite's 64-bit integers when every value has at most
    18 digits and the sum does not overflow, which SQLite reports as an error), else here."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        total = session.exec(select(func.coalesce(func.sum(column), 0)).where(*where)).one()
        return int(total)
    as_int = cast(column, Integer)
    try:
        total, longest = session.exec(
            select(func.coalesce(func.sum(as_int), 0), func.max(func.length(column))).where(*where)
        ).one()
        if longest is None or int(longest) <= 18:
            return int(total)
    except OperationalError:  # "integer overflow": add them up exactly below
        pass
    return sum(session.exec(select(column).where(*where)).all())


def journal_balanced(session: Session) -> None:
    total = _sum_wei(session, Account.balance_wei)
    if total != 0:
        raise InvariantViolation(f"journal_balanced: balances sum to {total}, not 0", total=total)


_SLICE_DIGITS = 9


def _not_digits(amount: Any) -> Any:
    """1 where a decimal text amount holds anything but digits (a sign), else 0 (SQLite)."""
    text = type_coerce(amount, String)
    return text.op("GLOB", return_type=Integer)(literal("*[^0-9]*", String))


def sum_wei_by(session: Session, key: Any, amount: Any, *where: Any) -> dict[Any, int]:
    """The exact sum of a ``Wei`` column that holds no negative amount (transfers, prices)
    per value of ``key``, over the rows that match ``where``, added up by the database.
    PostgreSQL's NUMERIC is exact. On SQLite, where amounts are decimal text, each amount is
    cut into 9-digit slices from the right and each slice summed as an integer (a sum of
    9-digit numbers cannot overflow 64 bits below a billion rows), the sums put back together
    here: three slices at first (27 digits, a billion tokens of 18 decimals), all that the
    longest amount needs when one is longer; text with anything but digits in it (a sign) is
    added up here instead, row by row."""

    def query(*columns: Any) -> Any:
        return select_columns(*columns).where(*where)

    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(query(key, func.sum(amount)).group_by(key)).all()
        return {k: int(total) for k, total in rows}
    slices, longest = 3, 0
    while True:
        parts = [
            func.sum(cast(func.substr(amount, -_SLICE_DIGITS * (i + 1), _SLICE_DIGITS), Integer))
            for i in range(slices)
        ]
        checks = (func.max(func.length(amount)), func.sum(_not_digits(amount)))
        rows = session.execute(query(key, *checks, *parts).group_by(key)).all()
        if any(odd for _, _, odd, *_ in rows):
            exact: dict[Any, int] = defaultdict(int)
            for k, value in session.execute(query(key, amount)):
                exact[k] += value
            return dict(exact)
        longest = max((int(n or 0) for _, n, *_ in rows), default=0)
        if longest <= _SLICE_DIGITS * slices:
            break
        slices = -(-longest // _SLICE_DIGITS)
    return {
        k: sum(int(t or 0) * 10 ** (_SLICE_DIGITS * i) for i, t in enumerate(totals))
        for k, _, _, *totals in rows
    }


def balances_match_transfers(session: Session) -> None:
    """Each account's stored balance against its credits less its debits, both summed by
    the database per account (a replay of the whole journal that reads one row per account,
    not one per transfer)."""
    debits = sum_wei_by(session, col(Transfer.debit_account_id), col(Transfer.amount_wei))
    credits = sum_wei_by(session, col(Transfer.credit_account_id), col(Transfer.amount_wei))
    for account_id, balance in session.exec(select(Account.id, Account.balance_wei)).all():
        derived = credits.get(account_id, 0) - debits.get(account_id, 0)
        if derived != balance:
            raise InvariantViolation(
                f"balances_match_transfers: {account_id} stores "
                f"{balance}, transfers give {derived}",
                account=account_id,
            )


def no_negative_balance(session: Session) -> None:
    rows = session.exec(
        select(Account.id, Account.balance_wei).where(Account.kind != AccountKind.SYSTEM)
    ).all()
    for account_id, balance in rows:
        if balance < 0:
            raise InvariantViolation(
                f"no_negative_balance: {account_id} is at {balance}", account=account_id
            )


def escrow_matches_open_jobs(session: Session) -> None:
    held = _sum_wei(
        session, Job.price_wei, col(Job.status).in_([JobStatus.PENDING, JobStatus.SUBMITTED])
    )
    escrow = session.get(Account, ESCROW)
    escrow_balance = escrow.balance_wei if escrow else 0
    if escrow_balance != held:
        raise InvariantViolation(
            f"escrow_matches_open_jobs: escrow {escrow_balance} != open prices {held}",
            escrow=escrow_balance,
            held=held,
        )


_BALANCES_OF = select_columns(col(Account.id), col(Account.kind), col(Account.balance_wei)).where(
    col(Account.id).in_(bindparam("ids", expanding=True))
)  # built once: it runs in every paid request's path


def unit_conserves(session: Session, before: Mapping[str, int], escrow_change_wei: int) -> None:
    """``check_money`` for one unit of work that moved money only between the accounts of
    ``before`` (their balances when it locked them, escrow among them) and changed the
    prices of open jobs by ``escrow_change_wei``. The balances are read back from the
    database: their changes must sum to zero (``journal_balanced``), none of the non-system
    ones may be negative (``no_negative_balance``), and escrow must have changed by exactly
    the prices opened less those closed (``escrow_matches_open_jobs``).

    Every other account and job is as the previous unit left it, when the full checks held
    for it by the same reasoning, so this holds the whole ledger to them at a cost that does
    not grow with the number of accounts or open jobs. The full checks still run in every
    sweep and before every epoch goes on chain (``check_full``), which catches a write that
    went around a unit of work."""
    ids = sorted(before)
    rows = session.execute(_BALANCES_OF, {"ids": ids}).all()
    after = {account_id: (kind, balance) for account_id, kind, balance in rows}
    missing = [i for i in ids if i not in after]
    if missing:
        raise InvariantViolation(f"unit_conserves: accounts {missing} vanished", missing=missing)
    moved = sum(after[i][1] - before[i] for i in ids)
    if moved != 0:
        raise InvariantViolation(
            f"journal_balanced: a unit of work changed balances by {moved} in all, not 0",
            total=moved,
        )
    for account_id, (kind, balance) in after.items():
        if kind != AccountKind.SYSTEM and balance < 0:
            raise InvariantViolation(
                f"no_negative_balance: {account_id} is at {balance}", account=account_id
            )
    escrow_change = after[ESCROW][1] - before[ESCROW] if ESCROW in after else 0
    if escrow_change != escrow_change_wei:
        raise InvariantViolation(
            f"escrow_matches_open_jobs: escrow changed by {escrow_change}, open prices by "
            f"{escrow_change_wei}",
            escrow=escrow_change,
            held=escrow_change_wei,
        )


def check_money(session: Session) -> None:
    """The checks that run after every unit of work that moves money."""
    journal_balanced(session)
    no_negative_balance(session)
    escrow_matches_open_jobs(session)


def check_full(session: Session) -> None:
    """Everything, including a replay of the journal: before anything is sent on chain."""
    check_money(session)
    balances_match_transfers(session)
