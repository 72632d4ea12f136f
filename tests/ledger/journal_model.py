"""The reference model for the journal's rule-based test (``journal_machine.py``): plain
dicts of balances, transfers and jobs, with ``journal.post``'s rules written out, no
database and no locks.

``run`` applies transfers in order as ``post`` would, one after another in one unit of
work, and stops at the first refusal (the caller then rolls the whole unit back): the meaning
``journal.post_all`` has and ``journal.post_batch`` must have. ``commit`` keeps the outcome
with what the operations did to jobs: opened (a charge), accepted (a credit) or failed (a
refund); ``close_epoch`` moves the decided jobs into an epoch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from ledger import journal
from ledger.errors import InsufficientFunds, TransferConflict
from ledger.journal import PostResult, TransferKind, TransferSpec

REFUSALS = (InsufficientFunds, TransferConflict, ValueError)
Refusal = type[InsufficientFunds] | type[TransferConflict] | type[ValueError]


@dataclass(frozen=True)
class Opening:
    """A job a charge opens: its price held in escrow until it is decided."""

    job_id: str
    client: str
    price_wei: int
    voucher_wei: int  # the client's cumulative voucher: all its charges so far


@dataclass(frozen=True)
class Op:
    """One operation: its transfers and what it does to a job, if anything."""

    name: str
    specs: list[TransferSpec]
    opening: Opening | None = None
    decided: tuple[str, bool] | None = None  # (job, accepted)


@dataclass(frozen=True)
class Outcome:
    """What a run of transfers does: the result of each one applied and, if one was refused,
    the refusal (then nothing of the run stays)."""

    results: list[PostResult]
    refusal: Refusal | None
    balances: dict[str, int] = field(repr=False)
    posted: dict[str, TransferSpec] = field(repr=False)


def _refusal(
    spec: TransferSpec, balances: dict[str, int], posted: dict[str, TransferSpec]
) -> Refusal | None:
    if spec.amount_wei <= 0 or spec.debit == spec.credit:
        return ValueError  # the shape is checked first, even for a known id
    known = posted.get(spec.id)
    if known is not None:
        return None if known == spec else TransferConflict
    if spec.debit not in journal.SYSTEM_ACCOUNTS and balances.get(spec.debit, 0) < spec.amount_wei:
        return InsufficientFunds
    return None


class JournalModel:
    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.posted: dict[str, TransferSpec] = {}
        self.open_jobs: dict[str, tuple[str, int]] = {}  # job -> (client, price)
        self.vouchers: dict[str, int] = {}  # client -> cumulative price of its charges
        self.decided: list[bool] = []  # accepted?, per job decided since the last epoch
        self.earned: Counter[str] = Counter()  # contributor -> cumulative pay
        self.charged: Counter[str] = Counter()  # client -> cumulative price of accepted jobs
        self.fees_wei = 0
        self.epoch = 0

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.balances.items() if v != 0}

    def run(self, specs: list[TransferSpec]) -> Outcome:
        """``post`` on each spec in order, on a copy; nothing here changes until ``commit``."""
        balances, posted = dict(self.balances), dict(self.posted)
        results: list[PostResult] = []
        for spec in specs:
            refusal = _refusal(spec, balances, posted)
            if refusal is not None:
                return Outcome(results, refusal, self.balances, self.posted)
            if spec.id in posted:
                results.append(PostResult.EXISTS)
                continue
            balances[spec.debit] = balances.get(spec.debit, 0) - spec.amount_wei
            balances[spec.credit] = balances.get(spec.credit, 0) + spec.amount_wei
            posted[spec.id] = spec
            results.append(PostResult.CREATED)
        return Outcome(results, None, balances, posted)

    def commit(self, ops: list[Op], outcome: Outcome) -> None:
        if outcome.refusal is not None:
            raise ValueError("a refused run leaves nothing to commit")
        self.balances, self.posted = outcome.balances, outcome.posted
        for op in ops:
            if op.opening is not None:
                o = op.opening
                self.open_jobs[o.job_id] = (o.client, o.price_wei)
                self.vouchers[o.client] = o.voucher_wei
            if op.decided is not None:
                job, accepted = op.decided
                client, price = self.open_jobs.pop(job)
                self.decided.append(accepted)
                if accepted:
                    self.charged[client] += price
                    for s in op.specs:
                        if s.kind == TransferKind.PAY:
                            self.earned[s.credit.split(":", 1)[1]] += s.amount_wei
                        else:
                            self.fees_wei += s.amount_wei

    def accepted_since_epoch(self) -> bool:
        return any(self.decided)

    def close_epoch(self) -> None:
        self.epoch += 1
        self.decided.clear()


def conflicting(spec: TransferSpec, change: str, others: tuple[str, ...]) -> TransferSpec:
    """``spec`` with one field changed (``others``: accounts to pick a new debit or credit
    from), still well-formed, so posting it can only be refused as a conflict."""
    if change == "amount":
        return replace(spec, amount_wei=spec.amount_wei + 1)
    if change == "amount_down" and spec.amount_wei > 1:
        return replace(spec, amount_wei=spec.amount_wei - 1)
    other = next(a for a in others if a not in (spec.debit, spec.credit))
    if change == "debit":
        return replace(spec, debit=other)
    if change == "credit":
        return replace(spec, credit=other)
    if change == "kind":
        kinds = list(TransferKind)
        return replace(spec, kind=kinds[(kinds.index(spec.kind) + 1) % len(kinds)])
    return replace(spec, job_id=None if spec.job_id else "0x" + "ab" * 32)
