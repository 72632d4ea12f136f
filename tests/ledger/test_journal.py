"""The double-entry journal on SQLite and PostgreSQL: transfers, idempotency, refusals, exact
256-bit amounts, and a rule-based run checked against an in-memory reference model."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from ledger_support import snapshot, transfer_ids
from sqlmodel import Session, delete, select

from ledger import invariants, journal
from ledger.db import engine_for, session_scope
from ledger.errors import InsufficientFunds, TransferConflict
from ledger.journal import PostResult, TransferKind, TransferSpec
from ledger.models import Account, Transfer

ALICE = journal.client_account("0x00000000000000000000000000000000000000A1")
BOB = journal.client_account("0x00000000000000000000000000000000000000b2")
CAROL = journal.contributor_account("0x00000000000000000000000000000000000000C3")
DAVE = journal.contributor_account("0x00000000000000000000000000000000000000d4")


def _journal_checks(session: Session) -> None:
    """The journal's own invariants (escrow against jobs is not the journal's business)."""
    invariants.journal_balanced(session)
    invariants.no_negative_balance(session)
    invariants.balances_match_transfers(session)


def _deposit(tid: str, account: str, amount: int) -> TransferSpec:
    return TransferSpec(tid, journal.VAULT, account, amount, TransferKind.DEPOSIT)


def test_journal_transfer_moves_money_and_sums_to_zero(db_url: str) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        assert journal.post(session, _deposit("d1", ALICE, 1_000)) == PostResult.CREATED
        spec = TransferSpec("h1", ALICE, journal.ESCROW, 300, TransferKind.HOLD, "0xjob")
        assert journal.post(session, spec) == PostResult.CREATED
    snap = snapshot(engine)
    assert snap.balances == {journal.VAULT: -1_000, ALICE: 700, journal.ESCROW: 300}
    assert sum(snap.balances.values()) == 0
    assert snap.transfers == 2
    with Session(engine) as session:
        stored = session.get(Transfer, "h1")
        assert stored is not None
        assert (stored.debit_account_id, stored.credit_account_id, stored.amount_wei) == (
            ALICE,
            journal.ESCROW,
            300,
        )
        assert (stored.kind, stored.job_id) == (TransferKind.HOLD, "0xjob")
        kinds = {a.id: a.kind for a in session.exec(select(Account)).all()}
        _journal_checks(session)
        assert journal.balance(session, BOB) == 0  # an account never touched reads as 0
    assert kinds == {journal.VAULT: "system", ALICE: "client", journal.ESCROW: "system"}


def test_journal_same_id_same_fields_is_exists_and_moves_nothing(db_url: str) -> None:
    engine = engine_for(db_url)
    spec = TransferSpec("h1", ALICE, journal.ESCROW, 40, TransferKind.HOLD, "0xjob")
    with session_scope(engine) as session:
        journal.post(session, _deposit("d1", ALICE, 100))
        assert journal.post(session, spec) == PostResult.CREATED
        assert journal.post(session, spec) == PostResult.EXISTS  # same unit of work
    before = snapshot(engine)
    with session_scope(engine) as session:  # a later unit of work: the retry of a crashed caller
        assert journal.post(session, spec) == PostResult.EXISTS
        assert (
            journal.post_all(session, [_deposit("d1", ALICE, 100), spec]) == [PostResult.EXISTS] * 2
        )
    after = snapshot(engine)
    assert after == before
    assert after.balance(ALICE) == 60 and after.balance(journal.ESCROW) == 40
    assert after.transfers == 2


CHANGES: list[dict[str, object]] = [
    {"debit": BOB},
    {"credit": journal.TREASURY},
    {"amount_wei": 41},
    {"amount_wei": 39},
    {"kind": TransferKind.FEE},
    {"job_id": "0xother"},
    {"job_id": None},
]


def test_journal_same_id_other_fields_conflicts_and_moves_nothing(db_url: str) -> None:
    engine = engine_for(db_url)
    spec = TransferSpec("h1", ALICE, journal.ESCROW, 40, TransferKind.HOLD, "0xjob")
    with session_scope(engine) as session:
        journal.post(session, _deposit("d1", ALICE, 100))
        journal.post(session, _deposit("d2", BOB, 100))
        journal.post(session, spec)
    before = snapshot(engine)
    for change in CHANGES:
        with session_scope(engine) as session:
            with pytest.raises(TransferConflict) as caught:
                journal.post(session, replace(spec, **change))  # type: ignore[arg-type]
            assert caught.value.code == "transfer_conflict" and caught.value.data["id"] == "h1"
            # the refusal leaves the unit of work usable and clean: committing it changes nothing
        assert snapshot(engine) == before, change
    with Session(engine) as session:
        stored = session.get(Transfer, "h1")
        assert stored is not None
        assert (stored.debit_account_id, stored.credit_account_id) == (ALICE, journal.ESCROW)
        assert (stored.amount_wei, stored.kind, stored.job_id) == (40, "hold", "0xjob")


def test_journal_debit_beyond_balance_is_refused_and_changes_nothing(db_url: str) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        journal.post(session, _deposit("d1", ALICE, 500))
        journal.post(
            session, TransferSpec("p1", journal.ESCROW, CAROL, 500, TransferKind.PAY, "0xj")
        )
    before = snapshot(engine)
    for account in (ALICE, CAROL):  # a client and a contributor, 500 wei each
        with session_scope(engine) as session:
            with pytest.raises(InsufficientFunds) as caught:
                journal.post(
                    session,
                    TransferSpec(f"x:{account}", account, journal.TREASURY, 501, TransferKind.FEE),
                )
            assert caught.value.data == {"account": account, "needed": 501, "available": 500}
            # the caller may go on in the same unit of work (jobs._hold relies on it): commit it
    with session_scope(engine) as session:  # an account never credited: one wei is too much
        with pytest.raises(InsufficientFunds):
            journal.post(session, TransferSpec("x:bob", BOB, journal.ESCROW, 1, TransferKind.HOLD))
    after = snapshot(engine)
    assert after.nonzero() == before.nonzero()
    assert after.transfers == before.transfers == 2
    assert not any(t.startswith("x:") for t in transfer_ids(engine))
    with session_scope(engine) as session:  # the whole balance, to the last wei, is allowed
        for account in (ALICE, CAROL):
            spec = TransferSpec(f"x:{account}", account, journal.TREASURY, 500, TransferKind.FEE)
            assert journal.post(session, spec) == PostResult.CREATED
    final = snapshot(engine)
    assert final.balance(ALICE) == final.balance(CAROL) == 0
    assert final.balance(journal.TREASURY) == 1_000


def test_journal_system_accounts_may_go_negative(db_url: str) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        for system in journal.SYSTEM_ACCOUNTS:  # each starts at 0 and is debited 7 wei
            assert (
                journal.post(
                    session, TransferSpec(f"s:{system}", system, ALICE, 7, TransferKind.REFUND)
                )
                == "created"
            )
    snap = snapshot(engine)
    systems = journal.SYSTEM_ACCOUNTS
    assert {s: snap.balance(s) for s in systems} == dict.fromkeys(systems, -7)
    assert snap.balance(ALICE) == 21
    with Session(engine) as session:
        _journal_checks(session)  # no_negative_balance exempts system accounts
    with session_scope(engine) as session:  # ...but never a client
        with pytest.raises(InsufficientFunds):
            journal.post(
                session, TransferSpec("s:alice", ALICE, journal.VAULT, 22, TransferKind.REFUND)
            )
    assert snapshot(engine) == snap


REFUSED = [
    TransferSpec("z0", journal.VAULT, ALICE, 0, TransferKind.DEPOSIT),
    TransferSpec("z1", journal.VAULT, ALICE, -1, TransferKind.DEPOSIT),
    TransferSpec("z2", journal.VAULT, ALICE, -(10**30), TransferKind.DEPOSIT),
    TransferSpec("z3", ALICE, ALICE, 1, TransferKind.HOLD),
    TransferSpec("z4", journal.ESCROW, journal.ESCROW, 5, TransferKind.PAY),
    TransferSpec("d1", ALICE, journal.VAULT, 0, TransferKind.DEPOSIT),  # even for an existing id
]


def test_journal_refuses_non_positive_amount_or_same_account(db_url: str) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        journal.post(session, _deposit("d1", ALICE, 10))
    before = snapshot(engine)
    for spec in REFUSED:
        with session_scope(engine) as session:
            with pytest.raises(ValueError, match=spec.id):
                journal.post(session, spec)
    assert snapshot(engine) == before
    assert transfer_ids(engine) == {"d1"}


def test_journal_amounts_above_2_63_round_trip_exactly(db_url: str) -> None:
    engine = engine_for(db_url)
    amounts = [2**63, 10**30, 2**256 - 1]
    for n, amount in enumerate(amounts):
        client = journal.client_account(f"0x{n + 1:040x}")
        with session_scope(engine) as session:
            journal.post(session, _deposit(f"big{n}", client, amount))
            journal.post(
                session,
                TransferSpec(
                    f"hold{n}", client, journal.ESCROW, amount - 1, TransferKind.HOLD, "0xj"
                ),
            )
        with Session(engine) as session:  # a new session: the values come back from the database
            stored = session.get(Transfer, f"big{n}")
            assert (
                stored is not None
                and stored.amount_wei == amount
                and type(stored.amount_wei) is int
            )
            assert journal.balance(session, journal.VAULT) == -amount
            assert journal.balance(session, client) == 1
            assert journal.balance(session, journal.ESCROW) == amount - 1
            _journal_checks(session)
        with session_scope(engine) as session:  # the same huge transfer again is recognised exactly
            assert journal.post(session, _deposit(f"big{n}", client, amount)) == PostResult.EXISTS
            with pytest.raises(TransferConflict):
                journal.post(session, _deposit(f"big{n}", client, amount - 1))
            with pytest.raises(InsufficientFunds):  # one wei above a balance that is exact
                journal.post(
                    session, TransferSpec("x", client, journal.TREASURY, 2, TransferKind.FEE)
                )
        with session_scope(engine) as session:  # put it back so the next amount starts from 0
            journal.post(
                session,
                TransferSpec(
                    f"back{n}", journal.ESCROW, journal.VAULT, amount - 1, TransferKind.REFUND
                ),
            )
            journal.post(
                session, TransferSpec(f"backc{n}", client, journal.VAULT, 1, TransferKind.REFUND)
            )
    snap = snapshot(engine)
    assert snap.nonzero() == {} and snap.transfers == 4 * len(amounts)


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(amount=st.integers(min_value=1, max_value=2**256 - 1))
def test_journal_any_uint256_amount_round_trips(db_url: str, amount: int) -> None:
    engine = engine_for(db_url)
    tid = f"rt:{amount}"
    with session_scope(engine) as session:
        if journal.post(session, _deposit(tid, ALICE, amount)) == PostResult.EXISTS:
            return  # hypothesis repeated an amount
        journal.post(
            session, TransferSpec(tid + ":back", ALICE, journal.VAULT, amount, TransferKind.REFUND)
        )
    with Session(engine) as session:
        stored = session.get(Transfer, tid)
        assert stored is not None and stored.amount_wei == amount
        assert journal.balance(session, ALICE) == 0 and journal.balance(session, journal.VAULT) == 0
        _journal_checks(session)


# --- a rule-based run against a reference model -------------------------------------------

CLIENTS = (ALICE, BOB)
CONTRIBUTORS = (CAROL, DAVE)
AMOUNTS = st.one_of(st.integers(1, 1_000), st.integers(1, 10**30))


class JournalMachine(RuleBasedStateMachine):
    """Deposits, holds, pays, fees and refunds (and refused overdrafts, replays and
    conflicting replays) against the journal and a plain dict of balances."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.engine = engine_for(url)
        self.model: dict[str, int] = defaultdict(int)
        self.posted: dict[str, TransferSpec] = {}
        self.open_jobs: dict[str, tuple[str, int]] = {}  # job -> (client, still held)
        self.serial = 0

    @initialize()
    def empty_journal(self) -> None:
        with session_scope(self.engine) as session:
            session.exec(delete(Transfer))  # type: ignore[call-overload]
            session.exec(delete(Account))  # type: ignore[call-overload]

    def _next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}:{self.serial}"

    def _post(self, spec: TransferSpec) -> None:
        with session_scope(self.engine) as session:
            assert journal.post(session, spec) == PostResult.CREATED
        self.posted[spec.id] = spec
        self.model[spec.debit] -= spec.amount_wei
        self.model[spec.credit] += spec.amount_wei

    def _refused(self, spec: TransferSpec) -> None:
        """An overdraft: refused with InsufficientFunds; the unit of work still commits clean."""
        with session_scope(self.engine) as session:
            with pytest.raises(InsufficientFunds):
                journal.post(session, spec)

    @rule(client=st.sampled_from(CLIENTS), amount=AMOUNTS)
    def deposit(self, client: str, amount: int) -> None:
        self._post(
            TransferSpec(
                self._next_id("deposit"), journal.VAULT, client, amount, TransferKind.DEPOSIT
            )
        )

    @rule(client=st.sampled_from(CLIENTS), amount=AMOUNTS)
    def hold(self, client: str, amount: int) -> None:
        job = self._next_id("job")
        spec = TransferSpec(f"hold:{job}", client, journal.ESCROW, amount, TransferKind.HOLD, job)
        if amount > self.model[client]:
            self._refused(spec)
            return
        self._post(spec)
        self.open_jobs[job] = (client, amount)

    def _from_escrow(self, data: st.DataObject, kind: TransferKind, credit: str | None) -> None:
        job = data.draw(st.sampled_from(sorted(self.open_jobs)), label="job")
        client, held = self.open_jobs[job]
        amount = data.draw(st.integers(1, held), label="amount")
        target = credit or data.draw(st.sampled_from(CONTRIBUTORS), label="contributor")
        self._post(
            TransferSpec(f"{kind}:{job}:{self.serial}", journal.ESCROW, target, amount, kind, job)
        )
        self.serial += 1
        if held == amount:
            del self.open_jobs[job]
        else:
            self.open_jobs[job] = (client, held - amount)

    @precondition(lambda self: self.open_jobs)
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        self._from_escrow(data, TransferKind.PAY, None)

    @precondition(lambda self: self.open_jobs)
    @rule(data=st.data())
    def fee(self, data: st.DataObject) -> None:
        self._from_escrow(data, TransferKind.FEE, journal.TREASURY)

    @precondition(lambda self: self.open_jobs)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(sorted(self.open_jobs)), label="job")
        client, held = self.open_jobs.pop(job)
        self._post(
            TransferSpec(f"refund:{job}", journal.ESCROW, client, held, TransferKind.REFUND, job)
        )

    @rule(account=st.sampled_from(CLIENTS + CONTRIBUTORS), extra=st.integers(1, 10**20))
    def overdraw(self, account: str, extra: int) -> None:
        spec = TransferSpec(
            self._next_id("over"),
            account,
            journal.TREASURY,
            self.model[account] + extra,
            TransferKind.FEE,
        )
        self._refused(spec)

    @precondition(lambda self: self.posted)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        spec = self.posted[data.draw(st.sampled_from(sorted(self.posted)), label="id")]
        with session_scope(self.engine) as session:
            assert journal.post(session, spec) == PostResult.EXISTS

    @precondition(lambda self: self.posted)
    @rule(data=st.data(), delta=st.integers(1, 10**18))
    def conflicting_replay(self, data: st.DataObject, delta: int) -> None:
        spec = self.posted[data.draw(st.sampled_from(sorted(self.posted)), label="id")]
        with session_scope(self.engine) as session:
            with pytest.raises(TransferConflict):
                journal.post(session, replace(spec, amount_wei=spec.amount_wei + delta))

    @invariant()
    def journal_agrees_with_model(self) -> None:
        with Session(self.engine) as session:
            _journal_checks(session)
        snap = snapshot(self.engine)
        assert snap.nonzero() == {k: v for k, v in self.model.items() if v != 0}
        assert snap.transfers == len(self.posted)
        assert snap.balance(journal.ESCROW) == sum(held for _, held in self.open_jobs.values())


def test_journal_random_operations_match_reference_model(db_url: str) -> None:
    """Random operations through ``JournalMachine``, whose invariants assert after every step
    that the journal balances and every balance equals the reference model's."""
    run_state_machine_as_test(
        lambda: JournalMachine(db_url),
        settings=settings(max_examples=10, stateful_step_count=40, deadline=None, database=None),
    )


def test_journal_locked_read_sees_a_concurrent_commit(pg_url: str) -> None:
    """PostgreSQL only (SQLite serialises whole transactions): an account a unit of work read
    (and still references) before taking its row lock must be re-read under the lock; the
    lock's balance is the committed one, never the session's stale copy."""
    engine = engine_for(pg_url)
    with session_scope(engine) as session:
        journal.post(session, _deposit("d1", ALICE, 100))
    with Session(engine) as late:
        seen = late.get(Account, ALICE)  # loaded, unlocked, and kept by the caller
        assert seen is not None and seen.balance_wei == 100
        with session_scope(engine) as early:  # another unit of work spends 60 and commits
            journal.post(early, TransferSpec("h1", ALICE, journal.ESCROW, 60, TransferKind.HOLD))
        with pytest.raises(InsufficientFunds) as caught:  # 40 left: 60 more is refused
            journal.post(late, TransferSpec("h2", ALICE, journal.ESCROW, 60, TransferKind.HOLD))
        assert caught.value.data["available"] == 40
        assert journal.post(late, TransferSpec("h3", ALICE, journal.ESCROW, 40, TransferKind.HOLD))
        assert seen.balance_wei == 0
        late.commit()
    snap = snapshot(engine)
    assert snap.balance(ALICE) == 0 and snap.balance(journal.ESCROW) == 100
    assert transfer_ids(engine) == {"d1", "h1", "h3"}
    with Session(engine) as session:
        _journal_checks(session)
