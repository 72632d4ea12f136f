"""The double-entry journal on SQLite and PostgreSQL: transfers, idempotency, refusals, exact
256-bit amounts, and a rule-based run checked against an in-memory reference model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from journal_machine import BATCHED, REFUSING, STEPS, JournalMachine, Tally
from ledger_support import address, snapshot, transfer_ids
from sqlmodel import Session, select

from ledger import invariants, journal
from ledger.config import Settings
from ledger.context import Context
from ledger.db import engine_for, session_scope
from ledger.errors import InsufficientFunds, TransferConflict
from ledger.journal import PostResult, TransferKind, TransferSpec
from ledger.models import Account, Transfer
from protocol.contracts import Deployment

ALICE = journal.client_account("0x00000000000000000000000000000000000000A1")
BOB = journal.client_account("0x00000000000000000000000000000000000000b2")
CAROL = journal.contributor_account("0x00000000000000000000000000000000000000C3")


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


# --- a rule-based run against a reference model -----------------------------------------

# Examples and steps per example on each database, and the steps each must reach: together
# at least the 10,000 operations the issue asks for, each step a unit of work checked against
# the model. Hypothesis ends an example early once its choices fill most of its buffer, so
# 150 steps asked give about 130. A step costs about 9 ms on SQLite, 18 on PostgreSQL.
RUNS = {"sqlite": (58, 150), "postgresql": (27, 150)}
SHARE = {"sqlite": 7_000, "postgresql": 3_000}


def test_journal_random_operations_match_reference_model(db_url: str, tmp_path: Path) -> None:
    """``JournalMachine`` (journal_machine.py): deposits, charges, credits, refunds, epoch
    payouts, replays, conflicts, overdrafts, batches and rollbacks, each step checked against
    the reference model. The first round is derandomized (the same steps on every run);
    where its examples end early and it falls short of this database's share, top-up rounds
    of new examples make up the count (their seed is printed on failure). A failure
    prints its whole example without shrinking it (minutes against a database): add
    ``Phase.shrink`` to the phases locally to get a minimal one."""
    engine = engine_for(db_url)
    deployment = Deployment(31337, address(0xE1), address(0xE2), address(0xE3), address(0xE4), 0)
    (tmp_path / "deployment.json").write_text(deployment.to_json())  # read for addresses only
    ctx = Context(Settings(database_url=db_url, data_dir=tmp_path))
    tally = Tally()

    class OnThisDatabase(JournalMachine):
        def __init__(self) -> None:
            super().__init__(engine, ctx, tally)

    examples, steps = RUNS[engine.dialect.name]
    share = SHARE[engine.dialect.name]
    for round_ in range(4):  # the first round usually suffices; examples end early by chance
        if tally.steps.total() >= share:
            break
        run_state_machine_as_test(
            OnThisDatabase,
            settings=settings(
                max_examples=examples if round_ == 0 else examples // 4,
                stateful_step_count=steps,
                deadline=None,
                database=None,
                derandomize=round_ == 0,  # top-up rounds draw new examples
                phases=[Phase.explicit, Phase.generate],  # shrinking replays minutes of steps
            ),
        )
    assert tally.steps.total() >= share, tally
    assert set(tally.steps) == STEPS and min(tally.steps.values()) >= 30, tally.steps
    assert set(tally.batched) == {*BATCHED, *REFUSING}, tally.batched
    assert min(tally.batched.values()) >= 20, tally.batched
    assert tally.rolled_back.total() >= 100, tally.rolled_back


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
