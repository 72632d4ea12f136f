"""Each named invariant passes on a consistent database and raises ``InvariantViolation``,
naming itself, on the corruption it guards against (and only the checks that should fire do)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_support import address, h32, insert_job
from sqlalchemy import text, update
from sqlmodel import Session, col, select

from ledger import epochs, invariants, journal
from ledger.config import Settings
from ledger.context import Context
from ledger.db import engine_for, session_scope
from ledger.errors import InvariantViolation
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Account, Job, JobStatus, Transfer
from protocol.contracts import Deployment

CLIENT = address(0xC1)
OTHER_CLIENT = address(0xC2)
CONTRIB = [address(0xA1), address(0xA2)]
PRICE = 10**30  # above 2**63, as amounts may be
Check = Callable[[Session], None]
CHECKS: dict[str, Check] = {
    "journal_balanced": invariants.journal_balanced,
    "balances_match_transfers": invariants.balances_match_transfers,
    "no_negative_balance": invariants.no_negative_balance,
    "escrow_matches_open_jobs": invariants.escrow_matches_open_jobs,
}


def _votes(result: str = "0xr") -> list[tuple[str, str, str, str]]:
    return [(c, address(0xB0 + i), "0xfp", result) for i, c in enumerate(CONTRIB)]


def _pay_out(session: Session, job: Job) -> None:
    """Accept a job by hand: two equal shares and a fee, all from escrow."""
    share = job.price_wei * 45 // 100
    for c in CONTRIB:
        journal.post(
            session,
            TransferSpec(
                f"pay:{job.id}:{c}",
                journal.ESCROW,
                journal.contributor_account(c),
                share,
                TransferKind.PAY,
                job.id,
            ),
        )
    fee = job.price_wei - 2 * share
    journal.post(
        session,
        TransferSpec(
            f"fee:{job.id}", journal.ESCROW, journal.TREASURY, fee, TransferKind.FEE, job.id
        ),
    )
    job.status = JobStatus.ACCEPTED
    job.fingerprint, job.result_hash = h32("fingerprint"), h32("result")  # the consensus
    session.add(job)


def _consistent(session: Session) -> dict[str, Job]:
    """A pending, a submitted, an accepted and a failed job, all with their money in place."""
    jobs = {
        "pending": insert_job(
            session, client=CLIENT, price=PRICE, votes=_votes(), status=JobStatus.PENDING
        ),
        "submitted": insert_job(session, client=CLIENT, price=PRICE + 1, votes=_votes()),
        "accepted": insert_job(session, client=OTHER_CLIENT, price=PRICE + 2, votes=_votes()),
        "failed": insert_job(session, client=OTHER_CLIENT, price=PRICE + 3, votes=_votes()),
    }
    _pay_out(session, jobs["accepted"])
    failed = jobs["failed"]
    journal.post(
        session,
        TransferSpec(
            f"refund:{failed.id}",
            journal.ESCROW,
            journal.client_account(failed.client),
            failed.price_wei,
            TransferKind.REFUND,
            failed.id,
        ),
    )
    failed.status = JobStatus.FAILED
    session.add(failed)
    session.flush()
    return jobs


def _failing(session: Session) -> set[str]:
    failing = set()
    for name, check in CHECKS.items():
        try:
            check(session)
        except InvariantViolation as exc:
            assert str(exc).startswith(f"{name}:"), exc  # each names itself
            failing.add(name)
    return failing


def _account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    assert account is not None
    return account


def test_invariants_pass_on_a_consistent_database(db_url: str) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        _consistent(session)
    with Session(engine) as session:  # read back from the database, amounts above 2**63
        assert _failing(session) == set()
        invariants.check_money(session)
        invariants.check_full(session)
        assert journal.balance(session, journal.ESCROW) == 2 * PRICE + 1  # pending + submitted
        assert journal.balance(session, journal.VAULT) < 0  # a system account, allowed


def test_invariants_journal_balanced_catches_an_edited_balance(sqlite_url: str) -> None:
    engine = engine_for(sqlite_url)
    with session_scope(engine) as session:
        _consistent(session)
    with Session(engine) as session:
        _account(session, journal.contributor_account(CONTRIB[0])).balance_wei += 1
        session.flush()
        with pytest.raises(InvariantViolation, match="journal_balanced") as caught:
            invariants.journal_balanced(session)
        assert caught.value.data == {"total": 1}
        assert _failing(session) == {"journal_balanced", "balances_match_transfers"}
        with pytest.raises(InvariantViolation, match="journal_balanced"):
            invariants.check_money(session)


def test_invariants_balances_match_transfers_catches_a_balanced_edit(sqlite_url: str) -> None:
    engine = engine_for(sqlite_url)
    with session_scope(engine) as session:
        _consistent(session)
    with Session(engine) as session:
        # five wei moved between two clients without a transfer: the sum stays zero
        _account(session, journal.client_account(OTHER_CLIENT)).balance_wei -= 5
        _account(session, journal.client_account(CLIENT)).balance_wei += 5
        session.flush()
        assert _failing(session) == {"balances_match_transfers"}
        invariants.check_money(session)  # the cheap checks cannot see it...
        with pytest.raises(InvariantViolation, match="balances_match_transfers") as caught:
            invariants.check_full(session)  # ...the replay before anything goes on chain does
        assert caught.value.data["account"] in {
            journal.client_account(CLIENT),
            journal.client_account(OTHER_CLIENT),
        }


@pytest.mark.parametrize("who", ["client", "contributor"])
def test_invariants_no_negative_balance_catches_a_negative_account(
    sqlite_url: str, who: str
) -> None:
    engine = engine_for(sqlite_url)
    with session_scope(engine) as session:
        _consistent(session)
    victim = (
        journal.client_account(CLIENT)
        if who == "client"
        else journal.contributor_account(CONTRIB[1])
    )
    with Session(engine) as session:
        account = _account(session, victim)
        moved = account.balance_wei + 1
        account.balance_wei -= moved  # now at -1 wei
        _account(session, journal.TREASURY).balance_wei += moved  # the sum stays zero
        session.flush()
        with pytest.raises(InvariantViolation, match="no_negative_balance") as caught:
            invariants.no_negative_balance(session)
        assert caught.value.data == {"account": victim}
        assert _failing(session) == {"no_negative_balance", "balances_match_transfers"}
        with pytest.raises(InvariantViolation, match="no_negative_balance"):
            invariants.check_money(session)


@pytest.mark.parametrize(
    "corruption", ["unheld_pending_job", "accepted_without_release", "refunded_but_open"]
)
def test_invariants_escrow_matches_open_jobs_catches_a_mismatch(
    sqlite_url: str, corruption: str
) -> None:
    engine = engine_for(sqlite_url)
    with session_scope(engine) as session:
        jobs = _consistent(session)
    with Session(engine) as session:
        if corruption == "unheld_pending_job":  # a job assigned without its price held
            insert_job(
                session,
                client=CLIENT,
                price=7,
                votes=_votes(),
                status=JobStatus.PENDING,
                hold=False,
            )
        elif corruption == "accepted_without_release":  # decided, but the escrow never paid out
            job = session.get(Job, jobs["submitted"].id)
            assert job is not None
            job.status = JobStatus.ACCEPTED
            session.add(job)
        else:  # refunded, yet still counted as open
            job = session.get(Job, jobs["failed"].id)
            assert job is not None
            job.status = JobStatus.SUBMITTED
            session.add(job)
        session.flush()
        with pytest.raises(InvariantViolation, match="escrow_matches_open_jobs") as caught:
            invariants.escrow_matches_open_jobs(session)
        assert caught.value.data["escrow"] == 2 * PRICE + 1
        assert caught.value.data["held"] != caught.value.data["escrow"]
        assert _failing(session) == {"escrow_matches_open_jobs"}  # the journal itself is sound
        with pytest.raises(InvariantViolation, match="escrow_matches_open_jobs"):
            invariants.check_money(session)


def _unit_before(session: Session) -> dict[str, int]:
    ids = [journal.ESCROW, journal.VAULT, journal.client_account(CLIENT)]
    ids.append(journal.client_account(OTHER_CLIENT))
    return {i: journal.balance(session, i) for i in ids}


@pytest.mark.parametrize(
    "corruption", [None, "outside_the_unit", "negative", "escrow_without_job", "vanished"]
)
def test_invariants_unit_conserves_checks_what_a_unit_changed(
    db_url: str, corruption: str | None
) -> None:
    """The admission path's check: a deposit of 10 wei and a hold of 3 pass; money from an
    account the unit did not lock, a client below zero, escrow that moved without the job's
    price, or an account gone, each fail, naming the invariant of ``check_money`` they
    break."""
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        _consistent(session)
    with Session(engine) as session:
        before = _unit_before(session)
        client = journal.client_account(CLIENT)
        deposit = TransferSpec("deposit:unit", journal.VAULT, client, 10, TransferKind.DEPOSIT)
        hold = TransferSpec("hold:unit", client, journal.ESCROW, 3, TransferKind.HOLD)
        journal.post_batch(session, [deposit, hold])
        opened_wei, expected = 3, None
        if corruption == "outside_the_unit":  # the treasury is not among the unit's accounts
            _account(session, journal.TREASURY).balance_wei += 1
            _account(session, client).balance_wei -= 1
            expected = "journal_balanced"
        elif corruption == "negative":
            account = _account(session, client)
            moved = account.balance_wei + 1
            account.balance_wei -= moved
            _account(session, journal.client_account(OTHER_CLIENT)).balance_wei += moved
            expected = "no_negative_balance"
        elif corruption == "escrow_without_job":
            opened_wei, expected = 0, "escrow_matches_open_jobs"
        elif corruption == "vanished":
            before[journal.contributor_account(address(0xDD))] = 0
            expected = "unit_conserves"
        session.flush()
        if expected is None:
            invariants.unit_conserves(session, before, escrow_change_wei=opened_wei)
        else:
            with pytest.raises(InvariantViolation, match=f"^{expected}:"):
                invariants.unit_conserves(session, before, escrow_change_wei=opened_wei)


@pytest.fixture
def epoch_ctx(sqlite_url: str, tmp_path: Path) -> Context:
    """A context whose deployment file names contracts that need not exist: building an
    epoch document reads only their addresses."""
    dep = Deployment(31337, address(0xE1), address(0xE2), address(0xE3), address(0xE4), 0)
    path = tmp_path / "deployment.json"
    path.write_text(dep.to_json())
    return Context(Settings(database_url=sqlite_url, data_dir=tmp_path, deployment_file=path))


@pytest.mark.parametrize("corruption", [None, "price_above_payout", "charged_above_voucher"])
def test_invariants_epoch_conserves_and_client_within_voucher(
    epoch_ctx: Context, corruption: str | None
) -> None:
    with session_scope(epoch_ctx.engine) as session:
        jobs = _consistent(session)
        epoch = epochs.open_epoch(session)
        assert epoch is not None and epoch.number == 1
    with Session(epoch_ctx.engine) as session:
        job = session.get(Job, jobs["accepted"].id)
        assert job is not None
        if corruption == "price_above_payout":  # charged one wei more than was paid out
            job.price_wei += 1
        elif corruption == "charged_above_voucher":  # charged beyond what the client signed
            job.voucher_cumulative_wei = job.price_wei - 1
            other = session.get(Job, jobs["failed"].id)
            assert other is not None
            other.voucher_cumulative_wei = job.price_wei - 1
            session.add(other)
        session.add(job)
        session.flush()
        epoch_row = epochs.open_epoch(session)  # the building epoch is returned, not a new one
        assert epoch_row is not None and epoch_row.number == 1
        if corruption is None:
            doc = epochs.build_document(session, epoch_ctx, epoch_row)
            payout = int(doc["totals"]["cumulative_payout_wei"])
            assert payout + int(doc["totals"]["cumulative_fees_wei"]) == int(
                doc["totals"]["cumulative_charged_wei"]
            )
            assert sum(int(leaf["cumulative_wei"]) for leaf in doc["leaves"]) == payout
            assert json.loads(json.dumps(doc)) == doc
            return
        name = "epoch_conserves" if corruption == "price_above_payout" else "client_within_voucher"
        with pytest.raises(InvariantViolation, match=name):
            epochs.build_document(session, epoch_ctx, epoch_row)
        assert _failing(session) == set()  # the journal is sound; only the epoch is wrong


@pytest.mark.parametrize(
    "prices",
    [
        [1, 2, 10**15 + 7],  # summed by the database
        [10**18 - 1] * 11,  # 18 digits each, the sum overflows 64 bits: SQLite says so
        [10**30, 5],  # more than 18 digits: summed here
    ],
    ids=["small", "overflow", "wide"],
)
def test_invariants_sum_amounts_exactly_however_they_are_added_up(
    db_url: str, prices: list[int]
) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        for price in prices:
            insert_job(session, client=CLIENT, price=price, votes=_votes())
    with Session(engine) as session:
        invariants.check_money(session)
        open_ = col(Job.status).in_([JobStatus.PENDING, JobStatus.SUBMITTED])
        assert invariants._sum_wei(session, Job.price_wei, open_) == sum(prices)
        assert invariants._sum_wei(session, Account.balance_wei) == 0
        job = session.exec(select(Job)).first()
        assert job is not None
        job.price_wei += 1  # one wei more than escrow holds
        session.flush()
        with pytest.raises(InvariantViolation, match="escrow_matches_open_jobs") as caught:
            invariants.check_money(session)
        assert caught.value.data["held"] == sum(prices) + 1


def _sums_in_python(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    debits: dict[str, int] = {}
    credits: dict[str, int] = {}
    for t in session.exec(select(Transfer)).all():
        debits[t.debit_account_id] = debits.get(t.debit_account_id, 0) + t.amount_wei
        credits[t.credit_account_id] = credits.get(t.credit_account_id, 0) + t.amount_wei
    return debits, credits


def _sums_in_sql(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    amount = col(Transfer.amount_wei)
    return (
        invariants.sum_wei_by(session, col(Transfer.debit_account_id), amount),
        invariants.sum_wei_by(session, col(Transfer.credit_account_id), amount),
    )


@pytest.mark.parametrize(
    "prices",
    [
        [1, 2, 10**15 + 7],
        [10**18 - 1] * 11,  # the sums overflow 64 bits
        [10**30, 5, 10**77 + 123_456_789_987_654_321],  # up to 78 digits: nine slices
    ],
    ids=["small", "overflow", "wide"],
)
def test_invariants_balances_match_transfers_sums_exactly_per_account(
    db_url: str, prices: list[int]
) -> None:
    engine = engine_for(db_url)
    with session_scope(engine) as session:
        for price in prices:
            insert_job(session, client=CLIENT, price=price, votes=_votes())
    with Session(engine) as session:
        assert _sums_in_sql(session) == _sums_in_python(session)
        invariants.balances_match_transfers(session)
        if engine.dialect.name == "sqlite":  # a sign in the text: added up here, as exactly
            session.execute(
                text("UPDATE transfer SET amount_wei = '+' || amount_wei WHERE id LIKE 'hold:%'")
            )
            assert _sums_in_sql(session) == _sums_in_python(session)
            invariants.balances_match_transfers(session)
            session.rollback()
        hold = session.exec(select(Transfer).where(col(Transfer.id).startswith("hold:"))).first()
        assert hold is not None  # a transfer rewritten around the journal, in its top digits
        session.execute(
            update(Transfer)
            .where(col(Transfer.id) == hold.id)
            .values(amount_wei=hold.amount_wei + 10**40)
        )
        with pytest.raises(InvariantViolation, match="balances_match_transfers") as caught:
            invariants.balances_match_transfers(session)
        assert caught.value.data["account"] in {journal.client_account(CLIENT), journal.ESCROW}
