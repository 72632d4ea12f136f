"""Named invariants, checked in code after every unit of work that moves money and before
anything is sent on chain. Each raises ``InvariantViolation`` (never ``assert``, which
``python -O`` strips) naming the check and carrying the figures that broke it.

- ``journal_balanced``: the balances of all accounts sum to zero.
- ``balances_match_transfers``: each account's stored balance equals the sum of its
  transfers (a full replay; run before anything goes on chain).
- ``no_negative_balance``: no client or contributor account is below zero.
- ``escrow_matches_open_jobs``: escrow holds exactly the prices of undecided jobs.
- ``epoch_conserves``: an epoch's cumulative payouts plus fees equal what is redeemed from
  clients, and the leaves sum to the cumulative payout (checked in ``ledger.epochs``).
"""

from __future__ import annotations

from collections import defaultdict

from sqlmodel import Session, col, select

from ledger.errors import InvariantViolation
from ledger.journal import ESCROW
from ledger.models import Account, AccountKind, Job, JobStatus, Transfer


def journal_balanced(session: Session) -> None:
    accounts = session.exec(select(Account)).all()
    total = sum(a.balance_wei for a in accounts)
    if total != 0:
        raise InvariantViolation(f"journal_balanced: balances sum to {total}, not 0", total=total)


def balances_match_transfers(session: Session) -> None:
    accounts = session.exec(select(Account)).all()
    derived: dict[str, int] = defaultdict(int)
    for t in session.exec(select(Transfer)).all():
        derived[t.debit_account_id] -= t.amount_wei
        derived[t.credit_account_id] += t.amount_wei
    for a in accounts:
        if derived[a.id] != a.balance_wei:
            raise InvariantViolation(
                f"balances_match_transfers: {a.id} stores "
                f"{a.balance_wei}, transfers give {derived[a.id]}",
                account=a.id,
            )


def no_negative_balance(session: Session) -> None:
    negative = session.exec(select(Account).where(Account.kind != AccountKind.SYSTEM)).all()
    for a in negative:
        if a.balance_wei < 0:
            raise InvariantViolation(
                f"no_negative_balance: {a.id} is at {a.balance_wei}", account=a.id
            )


def escrow_matches_open_jobs(session: Session) -> None:
    open_jobs = session.exec(
        select(Job).where(col(Job.status).in_([JobStatus.PENDING, JobStatus.SUBMITTED]))
    ).all()
    held = sum(j.price_wei for j in open_jobs)
    escrow = session.get(Account, ESCROW)
    escrow_balance = escrow.balance_wei if escrow else 0
    if escrow_balance != held:
        raise InvariantViolation(
            f"escrow_matches_open_jobs: escrow {escrow_balance} != open prices {held}",
            escrow=escrow_balance,
            held=held,
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
