"""Deciding submitted jobs: agreement pays the agreeing contributors and the treasury from
escrow, disagreement adds a replica up to ``max_replicas``, then a strict majority wins or the
client is refunded; a second run changes nothing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ledger_support import add_worker, address, h32, insert_job, snapshot
from sqlalchemy import update
from sqlmodel import Session, select

from ledger import invariants, journal
from ledger.config import Settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Worker
from ledger.reconcile import reconcile_batch, within_tolerance
from ledger.scheduler import agreed_streaks
from protocol import tensors
from protocol.pricing import split

CLIENT = "0x00000000000000000000000000000000000000Cc"
C1, C2, C3, C4 = (address(0xA0 + i) for i in range(1, 5))
W1, W2, W3, W4 = (address(0xB0 + i) for i in range(1, 5))
PRICE = 10**30 + 7  # above 2**63 and not a multiple of anything convenient
FP, FP2 = h32("fingerprint-a"), h32("fingerprint-b")
R1, R2, R3 = h32("result-1"), h32("result-2"), h32("result-3")


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Context:
    return Context(
        Settings(database_url=db_url, data_dir=tmp_path, replicas=2, max_replicas=3, fee_bps=1000)
    )


def _job(ctx: Context, votes: list[tuple[str, str, str, str]]) -> str:
    with session_scope(ctx.engine) as session:
        job = insert_job(session, client=CLIENT, price=PRICE, votes=votes)
        invariants.check_full(session)
        return job.id


def _reconcile(ctx: Context) -> tuple[int, int, int]:
    with session_scope(ctx.engine) as session:
        report = reconcile_batch(session, ctx, ctx.settings.reconcile_batch_size)
    return report.accepted, report.failed, report.extended


def _get(ctx: Context, jid: str) -> Job:
    with Session(ctx.engine) as session:
        job = session.get(Job, jid)
        assert job is not None
        return job


def _assignments(ctx: Context, jid: str) -> list[Assignment]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(Assignment).where(Assignment.job_id == jid)).all())


def _check_all(ctx: Context) -> None:
    with Session(ctx.engine) as session:
        invariants.check_full(session)


def _assert_rerun_changes_nothing(ctx: Context) -> None:
    before = snapshot(ctx.engine)
    with Session(ctx.engine) as session:
        statuses = {j.id: (j.status, j.decided_at) for j in session.exec(select(Job)).all()}
    assert _reconcile(ctx) == (0, 0, 0)
    assert snapshot(ctx.engine) == before
    with Session(ctx.engine) as session:
        assert {j.id: (j.status, j.decided_at) for j in session.exec(select(Job)).all()} == statuses


def test_reconcile_all_agree_pays_split_and_fee(ctx: Context) -> None:
    jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R1)])
    with session_scope(ctx.engine) as session:  # a worker that must not be drawn in
        add_worker(session, W3, C3)
    assert _reconcile(ctx) == (1, 0, 0)
    job = _get(ctx, jid)
    assert (job.status, job.result_hash, job.fingerprint, job.failure) == (
        JobStatus.ACCEPTED,
        R1,
        FP,
        None,
    )
    assert job.decided_at is not None and job.outputs_json is not None
    shares, fee = split(PRICE, 1000, [C1, C2])
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.contributor_account(C1)) == shares[C1]
    assert snap.balance(journal.contributor_account(C2)) == shares[C2]
    assert snap.balance(journal.TREASURY) == fee
    assert shares[C1] + shares[C2] + fee == PRICE and fee >= PRICE // 10
    assert snap.balance(journal.ESCROW) == 0
    assert snap.balance(journal.client_account(CLIENT)) == 0  # charged, nothing refunded
    assert snap.balance(journal.contributor_account(C3)) == 0
    assert snap.transfers == 2 + 3  # deposit, hold; two pays and a fee
    assert len(_assignments(ctx, jid)) == 2  # no replica added
    _check_all(ctx)
    _assert_rerun_changes_nothing(ctx)


def test_reconcile_disagreement_adds_a_replica_and_moves_no_money(ctx: Context) -> None:
    jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R2)])
    with session_scope(ctx.engine) as session:
        add_worker(session, W3, C3)  # the only one that qualifies
        add_worker(session, address(0xB5), C1)  # a contributor already on the job
        add_worker(session, address(0xB6), C4, eligible=False)  # not staked
        add_worker(session, address(0xB7), C4, seen_ago_s=3600)  # not seen lately
    before = snapshot(ctx.engine)
    assert _reconcile(ctx) == (0, 0, 1)
    job = _get(ctx, jid)
    assert (job.status, job.replicas_wanted) == (JobStatus.PENDING, 3)
    assert (job.result_hash, job.decided_at, job.failure) == (None, None, None)
    added = [a for a in _assignments(ctx, jid) if a.status == AssignmentStatus.ASSIGNED]
    assert [(a.worker, a.contributor) for a in added] == [(W3, C3)]
    assert len(_assignments(ctx, jid)) == 3
    assert snapshot(ctx.engine) == before  # still escrowed, nobody paid
    _check_all(ctx)
    assert _reconcile(ctx) == (0, 0, 0)  # pending: not picked up again until the third answers


def _submit_third(
    ctx: Context, jid: str, fingerprint: str, result: str, outputs: str | None = None
) -> None:
    with session_scope(ctx.engine) as session:
        third = session.exec(
            select(Assignment).where(
                Assignment.job_id == jid, Assignment.status == AssignmentStatus.ASSIGNED
            )
        ).one()
        third.status, third.fingerprint, third.result_hash = (
            AssignmentStatus.SUBMITTED,
            fingerprint,
            result,
        )
        third.outputs_json = outputs
        job = session.get(Job, jid)
        assert job is not None
        job.status = JobStatus.SUBMITTED
        session.add_all([third, job])


def test_reconcile_two_against_one_after_three_replicas_pays_only_the_majority(
    ctx: Context,
) -> None:
    jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R2)])
    with session_scope(ctx.engine) as session:
        add_worker(session, W3, C3)
    assert _reconcile(ctx) == (0, 0, 1)
    _submit_third(ctx, jid, FP, R2)  # sides with C2
    with session_scope(ctx.engine) as session:  # another eligible contributor: must not be added
        add_worker(session, W4, C4)
    assert _reconcile(ctx) == (1, 0, 0)
    job = _get(ctx, jid)
    assert (job.status, job.result_hash) == (JobStatus.ACCEPTED, R2)
    assert len(_assignments(ctx, jid)) == 3
    shares, fee = split(PRICE, 1000, sorted([C2, C3]))
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.contributor_account(C2)) == shares[C2]
    assert snap.balance(journal.contributor_account(C3)) == shares[C3]
    assert snap.balance(journal.contributor_account(C1)) == 0  # the dissenter earns nothing
    assert journal.contributor_account(C1) not in snap.nonzero()
    assert snap.balance(journal.TREASURY) == fee
    assert snap.balance(journal.ESCROW) == 0
    _check_all(ctx)
    _assert_rerun_changes_nothing(ctx)


def test_reconcile_three_different_answers_fails_and_refunds_in_full(ctx: Context) -> None:
    jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R2), (C3, W3, FP, R3)])
    with session_scope(ctx.engine) as session:
        add_worker(session, W4, C4)  # max_replicas reached: no fourth replica
    assert _reconcile(ctx) == (0, 1, 0)
    job = _get(ctx, jid)
    assert (job.status, job.failure, job.result_hash) == (JobStatus.FAILED, "no_majority", None)
    assert len(_assignments(ctx, jid)) == 3
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.client_account(CLIENT)) == PRICE
    assert snap.balance(journal.ESCROW) == 0
    assert snap.balance(journal.TREASURY) == 0
    assert all(snap.balance(journal.contributor_account(c)) == 0 for c in (C1, C2, C3, C4))
    assert snap.transfers == 3  # deposit, hold, refund
    _check_all(ctx)
    _assert_rerun_changes_nothing(ctx)


def test_reconcile_disagreement_without_a_spare_worker_fails(ctx: Context) -> None:
    jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R2)])
    with session_scope(ctx.engine) as session:
        add_worker(session, W1, C1)  # eligible, but on the job already
        add_worker(session, address(0xB6), C4, eligible=False)
    assert _reconcile(ctx) == (0, 1, 0)
    assert _get(ctx, jid).status == JobStatus.FAILED
    assert len(_assignments(ctx, jid)) == 2
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.client_account(CLIENT)) == PRICE
    assert snap.nonzero() == {journal.VAULT: -PRICE, journal.client_account(CLIENT): PRICE}


def test_reconcile_same_result_under_different_fingerprints_are_different_votes(
    ctx: Context,
) -> None:
    split_jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP2, R1)])
    with session_scope(ctx.engine) as session:
        add_worker(session, W3, C3)
    assert _reconcile(ctx) == (0, 0, 1)  # not accepted: a third replica is asked
    assert _get(ctx, split_jid).status == JobStatus.PENDING
    assert snapshot(ctx.engine).balance(journal.ESCROW) == PRICE
    _submit_third(ctx, split_jid, FP2, R1)  # agrees with C2's class only
    assert _reconcile(ctx) == (1, 0, 0)
    job = _get(ctx, split_jid)
    assert (job.fingerprint, job.result_hash) == (FP2, R1)
    snap = snapshot(ctx.engine)
    shares, _ = split(PRICE, 1000, sorted([C2, C3]))
    assert snap.balance(journal.contributor_account(C2)) == shares[C2]
    assert snap.balance(journal.contributor_account(C3)) == shares[C3]
    assert snap.balance(journal.contributor_account(C1)) == 0
    _check_all(ctx)


def test_reconcile_batch_decides_many_jobs_and_is_idempotent(ctx: Context) -> None:
    agree = [_job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R1)]) for _ in range(3)]
    fail = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R2), (C3, W3, FP, R3)])
    with session_scope(ctx.engine) as session:  # a job still waiting for answers: left alone
        pending = insert_job(
            session, client=CLIENT, price=PRICE, votes=[(C1, W1, FP, R1)], status=JobStatus.PENDING
        ).id
    assert _reconcile(ctx) == (3, 1, 0)
    assert {_get(ctx, j).status for j in agree} == {JobStatus.ACCEPTED}
    assert _get(ctx, fail).status == JobStatus.FAILED
    assert _get(ctx, pending).status == JobStatus.PENDING
    shares, fee = split(PRICE, 1000, [C1, C2])
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.contributor_account(C1)) == 3 * shares[C1]
    assert snap.balance(journal.TREASURY) == 3 * fee
    assert snap.balance(journal.ESCROW) == PRICE  # the pending job's hold only
    assert snap.balance(journal.client_account(CLIENT)) == PRICE  # the failed job's refund
    _check_all(ctx)
    for _ in range(2):
        _assert_rerun_changes_nothing(ctx)


# -- across fingerprint classes: revealed outputs within the model's tolerance --------------

BASE_LOGITS = np.linspace(-3.0, 3.0, 10, dtype=np.float32).reshape(1, 10)


def _cnn(ctx: Context) -> tuple[str, float]:
    (manifest,) = (m for m in ctx.models.values() if m.name == "digits-cnn")
    return "0x" + manifest.sha256, manifest.tolerance_abs


def _logits(delta: float = 0.0, array: np.ndarray | None = None) -> str:
    logits = (BASE_LOGITS if array is None else array) + np.float32(delta)
    return json.dumps({"logits": tensors.encode(logits.astype(np.float32))})


def _cnn_job(ctx: Context, second_fp: str, second_outputs: str, *spare: str) -> str:
    """A digits-CNN job answered by W1 (class FP, the base logits) and W2 (``second_fp``,
    ``second_outputs``), with workers ``spare`` registered (a W<n> of contributor C<n>)."""
    model, _ = _cnn(ctx)
    with session_scope(ctx.engine) as session:
        jid = insert_job(
            session,
            client=CLIENT,
            price=PRICE,
            votes=[(C1, W1, FP, R1), (C2, W2, second_fp, R2)],
            model_hash=model,
            outputs={W1: _logits(), W2: second_outputs},
        ).id
        for worker in spare:
            add_worker(session, worker, {W1: C1, W2: C2, W3: C3, W4: C4}[worker])
    return jid


def test_reconcile_other_classes_within_tolerance_agree_and_are_all_paid(ctx: Context) -> None:
    _, tolerance = _cnn(ctx)
    jid = _cnn_job(ctx, FP2, _logits(tolerance / 4))  # what honest CPUs of other tiers differ by
    assert _reconcile(ctx) == (1, 0, 0)
    job = _get(ctx, jid)
    assert job.status == JobStatus.ACCEPTED
    shares, fee = split(PRICE, 1000, sorted([C1, C2]))
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.contributor_account(C1)) == shares[C1]
    assert snap.balance(journal.contributor_account(C2)) == shares[C2]
    assert snap.balance(journal.TREASURY) == fee
    _assert_rerun_changes_nothing(ctx)
    _check_all(ctx)


def test_reconcile_other_class_beyond_tolerance_with_the_same_argmax_is_outvoted(
    ctx: Context,
) -> None:
    _, tolerance = _cnn(ctx)
    far = tolerance * 3  # what a perturbed model differs by; the argmax does not change
    assert int(np.argmax(BASE_LOGITS + far)) == int(np.argmax(BASE_LOGITS))
    jid = _cnn_job(ctx, FP2, _logits(far), W1, W2, W3)
    assert _reconcile(ctx) == (0, 0, 1)  # disagreement: a third replica is asked
    _submit_third(ctx, jid, FP2, R3, _logits(tolerance / 10))  # C2's class, near C1's answer
    assert _reconcile(ctx) == (1, 0, 0)
    job = _get(ctx, jid)
    assert (job.status, job.fingerprint, job.result_hash) == (JobStatus.ACCEPTED, FP, R1)
    shares, _ = split(PRICE, 1000, sorted([C1, C3]))
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.contributor_account(C1)) == shares[C1]
    assert snap.balance(journal.contributor_account(C3)) == shares[C3]
    assert snap.balance(journal.contributor_account(C2)) == 0
    with Session(ctx.engine) as session:
        faults = {w.address: w.safety_faults for w in session.exec(select(Worker)).all()}
    assert faults == {W1: 0, W2: 1, W3: 0}
    _check_all(ctx)


def test_reconcile_same_class_never_falls_back_to_tolerance(ctx: Context) -> None:
    _, tolerance = _cnn(ctx)
    jid = _cnn_job(ctx, FP, _logits(tolerance / 100))  # one class must match bit for bit
    assert _reconcile(ctx) == (0, 1, 0)  # no spare worker, no majority: refunded
    assert _get(ctx, jid).status == JobStatus.FAILED
    assert snapshot(ctx.engine).balance(journal.client_account(CLIENT)) == PRICE


def _wire(array: np.ndarray, name: str = "logits") -> str:
    return json.dumps({name: tensors.encode(array)})


@pytest.mark.parametrize(
    ("other", "agree"),
    [
        (_wire(BASE_LOGITS + np.float32(1e-6)), True),
        (_wire(BASE_LOGITS + np.float32(1e-3)), False),
        (_wire(BASE_LOGITS.reshape(2, 5)), False),  # another shape
        (_wire(BASE_LOGITS.astype(np.float64)), False),  # another dtype
        (_wire(BASE_LOGITS, name="scores"), False),  # another output
        (_wire(np.where(BASE_LOGITS > 2, np.nan, BASE_LOGITS).astype(np.float32)), False),
        (_wire(np.where(BASE_LOGITS > 2, np.inf, BASE_LOGITS).astype(np.float32)), False),
        ('{"logits": {"dtype": "float32", "shape": [1, 10], "data": "!!"}}', False),
        ("not json", False),
        (None, False),
    ],
)
def test_within_tolerance_compares_every_element_and_refuses_the_malformed(
    other: str | None, agree: bool
) -> None:
    assert within_tolerance(_wire(BASE_LOGITS), other, 2e-5, 1 << 16) is agree
    assert within_tolerance(other, _wire(BASE_LOGITS), 2e-5, 1 << 16) is agree


def test_within_tolerance_integers_must_be_equal() -> None:
    ids = np.arange(6, dtype=np.int64).reshape(1, 6)
    assert within_tolerance(_wire(ids, "ids"), _wire(ids.copy(), "ids"), 0.5, 1 << 16)
    assert not within_tolerance(_wire(ids, "ids"), _wire(ids + 1, "ids"), 5.0, 1 << 16)


@pytest.mark.parametrize("skim", [1, -1])
def test_reconcile_that_moves_other_than_the_price_is_refused_and_changes_nothing(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, skim: int
) -> None:
    """Reconcile checks what its unit of work moved (``unit_conserves``): pays and fee that
    do not add up to the price of the job they decide (a bug planted in the split, one wei
    either way) leave escrow off by that wei: refused, and nothing is written."""
    jid = _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R1)])
    before = snapshot(ctx.engine)

    def bad_split(price: int, fee_bps: int, contributors: list[str]) -> Any:
        shares, fee = split(price, fee_bps, contributors)
        return shares, fee - skim

    monkeypatch.setattr("ledger.reconcile.split", bad_split)
    with pytest.raises(invariants.InvariantViolation, match="escrow_matches_open_jobs"):
        _reconcile(ctx)
    assert snapshot(ctx.engine) == before
    assert _get(ctx, jid).status == JobStatus.SUBMITTED


def _streaks(ctx: Context) -> dict[str, tuple[int, int]]:
    """Each worker's (run of agreed replicated jobs, safety faults)."""
    with Session(ctx.engine) as session:
        workers = session.exec(select(Worker)).all()
        trust = agreed_streaks(session, [w.address for w in workers])
        return {w.address: (trust.get(w.address, 0), w.safety_faults) for w in workers}


def test_reconcile_agreement_builds_a_workers_trust_and_a_fault_ends_it(ctx: Context) -> None:
    """Adaptive replication's track record: each replicated job a worker's vote agreed on
    extends its run, a job it ran alone proves nothing, and a vote against the accepted
    answer ends the run (and counts a safety fault) even beside agreements in one batch."""
    with session_scope(ctx.engine) as session:
        for worker, owner in ((W1, C1), (W2, C2), (W3, C3)):
            add_worker(session, worker, owner)
    _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R1)])
    _job(ctx, [(C1, W1, FP, R2), (C3, W3, FP, R2)])
    assert _reconcile(ctx) == (2, 0, 0)
    assert _streaks(ctx) == {W1: (2, 0), W2: (1, 0), W3: (1, 0)}

    alone = _job(ctx, [(C1, W1, FP, R1)])  # admitted to W1 alone: accepted, W1 paid in full
    assert _reconcile(ctx) == (1, 0, 0)
    assert _get(ctx, alone).status == JobStatus.ACCEPTED
    shares, fee = split(PRICE, 1000, [C1])
    assert shares[C1] + fee == PRICE
    assert _streaks(ctx) == {W1: (2, 0), W2: (1, 0), W3: (1, 0)}  # no company, no trust

    _job(ctx, [(C1, W1, FP, R3), (C2, W2, FP, R3)])  # W1 and W2 agree here...
    _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R2), (C3, W3, FP, R2)])  # ...W1 dissents here
    assert _reconcile(ctx) == (2, 0, 0)
    assert _streaks(ctx) == {W1: (0, 1), W2: (3, 0), W3: (2, 0)}
    _check_all(ctx)
    _assert_rerun_changes_nothing(ctx)
    assert _streaks(ctx) == {W1: (0, 1), W2: (3, 0), W3: (2, 0)}


def test_reconcile_decides_while_a_request_holds_its_workers_rows(
    ctx: Context, db_url: str
) -> None:
    """On PostgreSQL a pull or a submission holds its worker's row (it notes ``last_seen``)
    and may then wait for the accounts a decision has locked; a decision that wrote that row
    too would deadlock with it. The trust record is a table of its own: a batch deciding an
    agreement completes while another transaction holds both workers' rows."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite's single writer serialises the two anyway")
    with session_scope(ctx.engine) as session:
        for worker, owner in ((W1, C1), (W2, C2)):
            add_worker(session, worker, owner)
    _job(ctx, [(C1, W1, FP, R1), (C2, W2, FP, R1)])
    holder = Session(ctx.engine)
    holder.execute(update(Worker).values(last_seen=time.time()))  # both rows, locked
    outcome: list[tuple[int, int, int]] = []
    done = threading.Event()

    def decide() -> None:
        outcome.append(_reconcile(ctx))
        done.set()

    try:
        threading.Thread(target=decide, daemon=True).start()
        assert done.wait(15), "the decision waited for a worker's row"
    finally:
        holder.rollback()
        holder.close()
    assert done.wait(15) and outcome == [(1, 0, 0)]
    assert _streaks(ctx) == {W1: (1, 0), W2: (1, 0)}
