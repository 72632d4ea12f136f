"""A hypothesis state machine over the journal, checked against ``JournalModel`` after every
step. Each step is one unit of work, in the ledger's own vocabulary:

- deposit: vault -> client (``deposit``), as ``jobs._sync_deposits`` posts it.
- charge: client -> escrow (``hold``) with the job row it pays for, as ``jobs.create_job``.
- credit: accept a job: escrow -> each agreeing contributor (``pay``) and escrow -> treasury
  (``fee``), split as ``reconcile._accept`` does; the job becomes ``accepted``.
- refund: escrow -> client (``refund``) for a failed or timed-out job.
- epoch payout: ``epochs.open_epoch`` and ``epochs.build_document``, then the epoch is marked
  posted (what ``close_epoch`` records once the chain has the root; the chain is left out).
  An epoch moves no money in the journal: a contributor's payout is the cumulative total of
  its ``pay`` transfers, claimed on chain against the Merkle root. The step checks the
  leaves and totals against the model and the journal's contributor and treasury balances.
- Slashes move no money in the journal either: the registry slashes the stake on chain and
  ``ledger.slashing`` records a ``Slash`` row. The journal's part in a wrong result is to leave
  its contributor out of the job's ``pay`` transfers: a credit pays a random subset of the
  contributors.
- replay (same id, same fields: ``exists``), conflicting replay (same id, one field changed:
  ``TransferConflict``), overdraw (``InsufficientFunds`` with the figures; a client's refused
  charge is then topped up and retried in the same unit of work, as ``jobs._hold`` does). The
  refusals leave the unit of work usable; it commits and nothing has moved.
- batch: 1 to 8 operations in one unit of work through ``journal.post_all`` or
  ``journal.post_batch``, with replays of earlier ids and repeats inside the batch; in about
  one batch in three, one of them is refused (a conflict, an overdraft, a malformed transfer)
  and the whole unit rolls back.

A step that moves money rolls its unit of work back instead of committing one time in ten;
then nothing of it may remain. After every step the machine compares every balance and the
number of transfers with the model and runs ``invariants.check_money``; at teardown
``invariants.check_full``, every stored transfer field by field, the open jobs and epochs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from journal_model import REFUSALS, JournalModel, Op, Opening, conflicting
from ledger_support import address, h32
from sqlalchemy import Engine
from sqlmodel import Session, col, delete, func, select

from ledger import epochs, invariants, journal
from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import InsufficientFunds, TransferConflict
from ledger.journal import PostResult, TransferKind, TransferSpec
from ledger.models import Account, Epoch, EpochStatus, Job, JobStatus, Transfer
from protocol.pricing import split

CLIENTS = tuple(address(n) for n in (0xA1, 0xB2, 0xB3))
CONTRIBUTORS = tuple(address(n) for n in (0xC3, 0xD4, 0xE5))
USERS = tuple(journal.client_account(c) for c in CLIENTS) + tuple(
    journal.contributor_account(c) for c in CONTRIBUTORS
)
ACCOUNTS = journal.SYSTEM_ACCOUNTS + USERS
AMOUNTS = st.one_of(st.integers(1, 1_000), st.integers(1, 10**30))
KEEP = st.integers(0, 9).map(lambda n: n < 9)  # one unit of work in ten is rolled back
CHANGES = ("amount", "amount_down", "debit", "credit", "kind", "job_id")
OPEN = (JobStatus.PENDING, JobStatus.SUBMITTED)

MOVES = ("deposit", "charge", "credit", "refund")  # the last two need an open job
NOTHING = ("overdraw", "replay", "conflicting_replay")  # the last two need a transfer
BATCHED = ("deposit", "deposit", "charge", "charge", "credit", "refund", "replay", "again")
REFUSING = ("conflict", "conflict_again", "overdraw", "malformed")
BATCH_MAX = 8  # transfers in one batch
VIA = {"post_all": journal.post_all, "post_batch": journal.post_batch}
STEPS = {*MOVES, *NOTHING, "epoch_payout", *(f"batch:{via}" for via in VIA)}

TRANSFERS = select(func.count()).select_from(Transfer).scalar_subquery()
BALANCES = select(col(Account.id), col(Account.balance_wei), TRANSFERS)
Apply = Callable[[Session, list[TransferSpec]], list[PostResult]]


@dataclass
class Tally:
    """Steps by kind, those whose unit of work was rolled back, operations inside batches."""

    steps: Counter[str] = field(default_factory=Counter)
    rolled_back: Counter[str] = field(default_factory=Counter)
    batched: Counter[str] = field(default_factory=Counter)


class RolledBack(Exception):
    """Raised inside a unit of work to roll it back."""


@dataclass
class Plan:
    """Operations being drawn for one unit of work, and the jobs they leave open."""

    open_jobs: dict[str, tuple[str, int]]
    vouchers: dict[str, int]
    ops: list[Op] = field(default_factory=list)

    def specs(self) -> list[TransferSpec]:
        return [s for op in self.ops for s in op.specs]

    def balance(self, model: JournalModel, account: str) -> int:
        """After the operations so far (before them, if one of them is refused)."""
        return model.run(self.specs()).balances.get(account, 0)


class JournalMachine(RuleBasedStateMachine):
    def __init__(self, engine: Engine, ctx: Context, tally: Tally) -> None:
        super().__init__()
        self.engine, self.ctx, self.tally = engine, ctx, tally
        self.model = JournalModel()
        self.serial = 0

    # --- drawing operations ----------------------------------------------------------------

    def _id(self) -> int:
        self.serial += 1
        return self.serial

    def _plan(self) -> Plan:
        return Plan(dict(self.model.open_jobs), dict(self.model.vouchers))

    def _deposit(self, client: str, amount: int) -> Op:
        account = journal.client_account(client)
        spec = TransferSpec(
            f"deposit:{client}:{self._id()}", journal.VAULT, account, amount, TransferKind.DEPOSIT
        )
        return Op("deposit", [spec])

    def _charge(self, client: str, price: int, plan: Plan) -> Op:
        jid = f"0x{self._id():064x}"
        plan.vouchers[client] = plan.vouchers.get(client, 0) + price
        plan.open_jobs[jid] = (client, price)
        account = journal.client_account(client)
        spec = TransferSpec(f"hold:{jid}", account, journal.ESCROW, price, TransferKind.HOLD, jid)
        return Op("charge", [spec], opening=Opening(jid, client, price, plan.vouchers[client]))

    def _credit(self, jid: str, price: int, agreeing: list[str]) -> Op:
        shares, fee = split(price, self.ctx.settings.fee_bps, sorted(agreeing))
        specs = [
            TransferSpec(
                f"pay:{jid}:{c}",
                journal.ESCROW,
                journal.contributor_account(c),
                amount,
                TransferKind.PAY,
                jid,
            )
            for c, amount in shares.items()
            if amount > 0
        ]
        if fee > 0:
            specs.append(
                TransferSpec(
                    f"fee:{jid}", journal.ESCROW, journal.TREASURY, fee, TransferKind.FEE, jid
                )
            )
        return Op("credit", specs, decided=(jid, True))

    def _refund(self, jid: str, client: str, price: int) -> Op:
        account = journal.client_account(client)
        spec = TransferSpec(
            f"refund:{jid}", journal.ESCROW, account, price, TransferKind.REFUND, jid
        )
        return Op("refund", [spec], decided=(jid, False))

    def _price(self, data: st.DataObject, balance: int) -> int:
        """Mostly one the client can pay; sometimes its whole balance or one wei more; or any."""
        within = st.integers(1, balance) if balance > 0 else st.just(1)
        edges = st.sampled_from([balance, balance + 1] if balance > 0 else [1])
        return data.draw(st.one_of(within, edges, AMOUNTS), label="price")

    def _op(self, data: st.DataObject, kind: str, plan: Plan) -> Op | None:
        """An operation of ``kind`` drawn against what ``plan`` leaves (None: impossible)."""
        if kind == "deposit":
            return self._deposit(data.draw(st.sampled_from(CLIENTS)), data.draw(AMOUNTS))
        if kind == "charge":
            client = data.draw(st.sampled_from(CLIENTS))
            balance = plan.balance(self.model, journal.client_account(client))
            return self._charge(client, self._price(data, balance), plan)
        if kind in ("credit", "refund"):
            if not plan.open_jobs:
                return None
            jid = data.draw(st.sampled_from(sorted(plan.open_jobs)), label="job")
            client, price = plan.open_jobs.pop(jid)
            if kind == "refund":
                return self._refund(jid, client, price)
            agreeing = st.lists(st.sampled_from(CONTRIBUTORS), min_size=1, max_size=3, unique=True)
            return self._credit(jid, price, data.draw(agreeing, label="agreeing"))
        if kind == "overdraw":
            account = data.draw(st.sampled_from(USERS))
            amount = plan.balance(self.model, account) + data.draw(st.integers(1, 10**20))
            spec = TransferSpec(
                f"over:{self._id()}", account, journal.TREASURY, amount, TransferKind.FEE
            )
            return Op(kind, [spec])
        if kind == "malformed":  # nothing, or from and to the same account
            account, same = data.draw(st.sampled_from(USERS)), data.draw(st.booleans())
            debit = account if same else journal.VAULT
            spec = TransferSpec(f"bad:{self._id()}", debit, account, int(same), TransferKind.FEE)
            return Op(kind, [spec])
        inside = kind in ("again", "conflict_again")  # a transfer earlier in this batch
        earlier = plan.specs() if inside else list(self.model.posted.values())
        if not earlier:
            return None
        spec = data.draw(st.sampled_from(earlier), label="earlier")
        if kind.startswith("conflict"):
            spec = conflicting(spec, data.draw(st.sampled_from(CHANGES)), ACCOUNTS)
        return Op(kind, [spec])

    # --- applying them ----------------------------------------------------------------------

    def _write_jobs(self, session: Session, ops: list[Op]) -> None:
        now = int(time.time())
        for op in ops:
            if (o := op.opening) is not None:
                session.add(
                    Job(
                        id=o.job_id,
                        client=o.client,
                        model_hash=h32("model"),
                        input_hash=h32(o.job_id),
                        rows=1,
                        price_wei=o.price_wei,
                        voucher_cumulative_wei=o.voucher_wei,
                        voucher_expiry=now + 7200,
                        voucher_signature="0x" + "00" * 65,
                        inputs_json="{}",
                        replicas_wanted=1,
                    )
                )
            if op.decided is not None:
                jid, accepted = op.decided
                job = session.get(Job, jid)
                assert job is not None and job.status in OPEN
                job.decided_at = now
                job.status = JobStatus.ACCEPTED if accepted else JobStatus.FAILED
                if accepted:
                    job.fingerprint, job.result_hash = h32("cpu"), h32(f"result:{jid}")
                session.add(job)

    def _run(self, ops: list[Op], apply: Apply, keep: bool) -> None:
        """The operations in one unit of work: the first refusal rolls the whole unit back,
        as ``keep=False`` does at its end."""
        specs = [s for op in ops for s in op.specs]
        expected = self.model.run(specs)
        try:
            with session_scope(self.engine) as session:
                results = apply(session, specs)
                self._write_jobs(session, ops)
                if not keep:
                    raise RolledBack
        except RolledBack:
            assert expected.refusal is None and results == expected.results, expected
            return
        except REFUSALS as exc:
            assert type(exc) is expected.refusal, (exc, expected)
            return
        assert expected.refusal is None and results == expected.results, expected
        self.model.commit(ops, expected)

    def _step(self, kind: str, keep: bool = True) -> None:
        self.tally.steps[kind] += 1
        if not keep:
            self.tally.rolled_back[kind] += 1

    # --- rules ------------------------------------------------------------------------------

    @initialize()
    def empty_ledger(self) -> None:
        """Examples share the database: each starts from empty tables."""
        with session_scope(self.engine) as session:
            for table in (Transfer, Account, Job, Epoch):
                session.execute(delete(table))

    @rule(data=st.data(), keep=KEEP)
    def move(self, data: st.DataObject, keep: bool) -> None:
        """A deposit, a charge, a credit or a refund, in its own unit of work."""
        kinds = MOVES if self.model.open_jobs else MOVES[:2]
        kind = data.draw(st.sampled_from(kinds), label="kind")
        self._step(kind, keep)
        op = self._op(data, kind, self._plan())
        assert op is not None
        self._run([op], journal.post_all, keep)

    @rule(data=st.data())
    def move_nothing(self, data: st.DataObject) -> None:
        """An overdraft, a replay or a conflicting replay: refused or ``exists``."""
        kinds = NOTHING if self.model.posted else NOTHING[:1]
        kind = data.draw(st.sampled_from(kinds), label="kind")
        self._step(kind)
        if kind == "overdraw":
            self._overdraw(data)
            return
        spec = data.draw(st.sampled_from(list(self.model.posted.values())), label="earlier")
        with session_scope(self.engine) as session:
            if kind == "replay":
                assert journal.post(session, spec) == PostResult.EXISTS
                return
            change = data.draw(st.sampled_from(CHANGES), label="change")
            with pytest.raises(TransferConflict) as caught:
                journal.post(session, conflicting(spec, change, ACCOUNTS))
            assert caught.value.data == {"id": spec.id}

    def _overdraw(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(USERS), label="account")
        extra = data.draw(st.integers(1, 10**20), label="extra")
        available = self.model.balance(account)
        client = account.split(":", 1)[1] if account.startswith("client:") else None
        plan, ops = self._plan(), []
        if client is not None:  # a charge, topped up and retried if top_up
            ops = [self._deposit(client, extra), self._charge(client, available + extra, plan)]
            spec = ops[1].specs[0]
        else:  # contributors are never debited by the ledger, but the journal would refuse it
            spec = TransferSpec(
                f"over:{self._id()}", account, journal.TREASURY, available + extra, TransferKind.FEE
            )
        if not data.draw(st.booleans(), label="top_up"):
            ops = []
        expected = self.model.run([s for op in ops for s in op.specs])
        with session_scope(self.engine) as session:
            with pytest.raises(InsufficientFunds) as caught:
                journal.post(session, spec)
            figures = {"account": account, "needed": available + extra, "available": available}
            assert caught.value.data == figures
            for op in ops:
                assert journal.post_all(session, op.specs) == [PostResult.CREATED]
            self._write_jobs(session, ops)
        self.model.commit(ops, expected)

    @rule(data=st.data(), size=st.integers(1, 8), keep=KEEP, via=st.sampled_from(sorted(VIA)))
    def batch(self, data: st.DataObject, size: int, keep: bool, via: str) -> None:
        """Up to ``size`` operations, 8 transfers at most, in one unit of work, through
        ``post_all`` or ``post_batch``."""
        self._step(f"batch:{via}", keep)
        refused_at = data.draw(st.integers(0, 3 * size - 1), label="refused_at")
        plan = self._plan()
        for i in range(size):
            kinds = REFUSING if i == refused_at else BATCHED
            op = self._op(data, data.draw(st.sampled_from(kinds), label="kind"), plan)
            if op is None:
                continue
            if len(plan.specs()) + len(op.specs) > BATCH_MAX:
                break  # (the plan counts it as done: nothing after it may rely on it)
            plan.ops.append(op)
            self.tally.batched[op.name] += 1
        self._run(plan.ops, VIA[via], keep)

    @precondition(lambda self: self.model.decided)
    @rule(keep=KEEP)
    def epoch_payout(self, keep: bool) -> None:
        """Close an epoch if a job was accepted since the last one and some contributor has
        earned a wei (an earnings tree needs a leaf); none otherwise."""
        self._step("epoch_payout", keep)
        accepted = self.model.accepted_since_epoch() and any(self.model.earned.values())
        try:
            with session_scope(self.engine) as session:
                epoch = epochs.open_epoch(session)
                if accepted:
                    assert epoch is not None
                    assert (epoch.number, epoch.jobs) == (
                        self.model.epoch + 1,
                        len(self.model.decided),
                    )
                    doc = epochs.build_document(session, self.ctx, epoch)
                    self._check_payout(session, doc["leaves"], doc["totals"], doc["vouchers"])
                    epoch.status, epoch.root = EpochStatus.POSTED, doc["root"]
                    epoch.cumulative_payout_wei = int(doc["totals"]["cumulative_payout_wei"])
                    epoch.cumulative_fees_wei = int(doc["totals"]["cumulative_fees_wei"])
                    session.add(epoch)
                else:
                    assert epoch is None
                if not keep:
                    raise RolledBack
        except RolledBack:
            return
        if accepted:
            self.model.close_epoch()

    def _check_payout(
        self,
        session: Session,
        leaves: list[dict[str, str]],
        totals: dict[str, str],
        vouchers: list[dict[str, str]],
    ) -> None:
        """Each contributor's payout is the model's cumulative pay and its balance in the
        journal (contributors are only ever credited); the fees are the treasury's."""
        m = self.model
        paid = {leaf["account"].lower(): int(leaf["cumulative_wei"]) for leaf in leaves}
        assert paid == {c: v for c, v in m.earned.items() if v > 0}
        for c in CONTRIBUTORS:
            assert journal.balance(session, journal.contributor_account(c)) == paid.get(c, 0)
        assert int(totals["cumulative_payout_wei"]) == sum(paid.values())
        assert int(totals["cumulative_fees_wei"]) == m.fees_wei
        assert journal.balance(session, journal.TREASURY) == m.fees_wei
        assert int(totals["cumulative_charged_wei"]) == sum(m.charged.values())
        assert {v["client"]: int(v["redeem_cumulative_wei"]) for v in vouchers} == m.charged

    # --- checks -----------------------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        """Every balance and the number of transfers (one statement), then the invariants."""
        with Session(self.engine) as session:
            rows = session.connection().execute(BALANCES).all()
            invariants.check_money(session)
        assert {a: b for a, b, _ in rows if b != 0} == self.model.nonzero()
        assert (rows[0][2] if rows else 0) == len(self.model.posted)

    def teardown(self) -> None:
        with Session(self.engine) as session:
            invariants.check_full(session)
            stored = session.exec(select(Transfer)).all()
            jobs = session.exec(select(Job)).all()
            posted = session.exec(
                select(func.count()).select_from(Epoch).where(Epoch.status == EpochStatus.POSTED)
            ).one()
        fields = [
            TransferSpec(
                t.id,
                t.debit_account_id,
                t.credit_account_id,
                t.amount_wei,
                TransferKind(t.kind),
                t.job_id,
            )
            for t in stored
        ]
        assert {s.id: s for s in fields} == self.model.posted
        assert {j.id for j in jobs if j.status in OPEN} == set(self.model.open_jobs)
        assert posted == self.model.epoch
