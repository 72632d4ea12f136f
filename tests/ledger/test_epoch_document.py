"""The epoch document, byte for byte: two epochs of a fixed ledger (agreement, a dissenting
vote in the consensus class, a contested job whose votes differ across fingerprint classes, a
failed split vote, a failed job with no answer, expired assignments, a job left undecided,
amounts above 2**64 and two clients) are built by ``open_epoch`` and ``build_document`` and
compared with the files in ``tests/vectors/``, written by the code as it was before the epoch
close was rewritten for speed (one query per job's votes, every row an ORM object). Run on
SQLite and PostgreSQL: the two must give the same bytes.

Rewrite the vectors only when the epoch format changes on purpose:
``INFERLEDGER_WRITE_VECTORS=1 .venv/bin/pytest tests/ledger/test_epoch_document.py -k sqlite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from eth_utils import keccak
from ledger_support import address
from sqlmodel import Session, col, select

from ledger import epochs, journal
from ledger.config import Settings
from ledger.context import Context
from ledger.db import engine_for, session_scope
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Assignment, AssignmentStatus, Epoch, EpochStatus, Job, JobStatus
from protocol import epochfile, tensors
from protocol.contracts import Deployment
from protocol.pricing import split

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FEE_BPS = 250
CLIENT_A, CLIENT_B = address(0xCA), address(0xCB)
C1, C2, C3, C4 = (address(0xC0 + i) for i in range(1, 5))
W1, W2, W3, W4 = (address(0xB0 + i) for i in range(1, 5))
WORKER_OF = {C1: W1, C2: W2, C3: W3, C4: W4}
MODEL = "0x" + "3d" * 32
ESCROW, PAY = journal.ESCROW, TransferKind.PAY
WIDE = 10**30 + 7  # above 2**64: summed exactly whichever way it is added up


def _h(tag: str) -> str:
    return "0x" + bytes(keccak(text=tag)).hex()


FP_A, FP_B = _h("fingerprint-a"), _h("fingerprint-b")
R1, R2 = _h("result-1"), _h("result-2")


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Context:
    dep = Deployment(31337, address(0xE1), address(0xE2), address(0xE3), address(0xE4), 0)
    path = tmp_path / "deployment.json"
    path.write_text(dep.to_json())
    settings = Settings(
        database_url=db_url, data_dir=tmp_path, deployment_file=path, fee_bps=FEE_BPS
    )
    return Context(settings)


def _vote(
    job_id: str, contributor: str, fingerprint: str | None, result: str | None, **extra: object
) -> Assignment:
    n = int(contributor[-2:], 16)
    fields: dict[str, object] = {
        "job_id": job_id,
        "worker": WORKER_OF[contributor],
        "contributor": contributor,
        "deadline": 1_800_000_000,
        "status": AssignmentStatus.SUBMITTED,
        "fingerprint": fingerprint,
        "fingerprint_json": json.dumps({"runtime": f"cpu-{fingerprint == FP_B}", "n": n}),
        "result_hash": result,
        "signature": "0x" + f"{n:02x}" * 65,
        "outputs_json": json.dumps({"logits": tensors.encode(np.full((1, 3), n, np.float32))}),
        "submitted_at": 1_700_000_100,
    }
    return Assignment(**{**fields, **extra})  # type: ignore[arg-type]


def _job(
    session: Session,
    tag: str,
    client: str,
    price: int,
    cumulative: int,
    votes: Sequence[tuple[str, str | None, str | None]],
    decision: tuple[str, str | None, str | None, str | None],
    paid: Sequence[str] = (),
    expired: Sequence[str] = (),
) -> None:
    """A job with its votes (contributor, fingerprint, result), its price deposited and held,
    then decided as ``decision`` (status, fingerprint, result, failure): the agreeing
    ``paid`` contributors and the treasury paid from escrow, or the client refunded."""
    jid = _h(tag)
    status, fingerprint, result, failure = decision
    c = journal.client_account(client)
    specs = [
        TransferSpec(f"deposit:{jid}", journal.VAULT, c, price, TransferKind.DEPOSIT),
        TransferSpec(f"hold:{jid}", c, journal.ESCROW, price, TransferKind.HOLD, jid),
    ]
    if status == JobStatus.ACCEPTED:
        shares, fee = split(price, FEE_BPS, sorted(paid))
        for who, amount in shares.items():
            account = journal.contributor_account(who)
            specs.append(TransferSpec(f"pay:{jid}:{who}", ESCROW, account, amount, PAY, jid))
        specs.append(
            TransferSpec(f"fee:{jid}", journal.ESCROW, journal.TREASURY, fee, TransferKind.FEE, jid)
        )
    elif status == JobStatus.FAILED:
        specs.append(TransferSpec(f"refund:{jid}", ESCROW, c, price, TransferKind.REFUND, jid))
    journal.post_all(session, specs)
    inputs = {"input": tensors.encode(np.arange(6, dtype=np.float32).reshape(2, 3) + len(tag))}
    session.add(
        Job(
            id=jid,
            client=client,
            model_hash=MODEL,
            input_hash=_h(f"input-{tag}"),
            rows=2,
            price_wei=price,
            voucher_cumulative_wei=cumulative,
            voucher_expiry=1_900_000_000 + cumulative % 1000,
            voucher_signature="0x" + _h(f"voucher-{tag}")[2:] * 2 + "1b",
            inputs_json=json.dumps(inputs),
            status=status,
            replicas_wanted=len(votes),
            result_hash=result,
            fingerprint=fingerprint,
            failure=failure,
            created_at=1_700_000_000,
            decided_at=None if status == JobStatus.PENDING else 1_700_000_200,
        )
    )  # fmt: skip
    for contributor, fp, res in votes:
        session.add(_vote(jid, contributor, fp, res))
    for contributor in expired:
        session.add(
            _vote(jid, contributor, None, None, status=AssignmentStatus.EXPIRED, signature=None)
        )
    session.flush()


ACCEPT_A = (JobStatus.ACCEPTED, FP_A, R1, None)


def _first_epoch(session: Session) -> None:
    _job(session, "a1", CLIENT_A, 1000, 1000, [(C1, FP_A, R1), (C2, FP_A, R1)], ACCEPT_A, [C1, C2])
    _job(session, "a2", CLIENT_A, 333, 1333, [(C2, FP_A, R1), (C3, FP_A, R1)], ACCEPT_A, [C2, C3])
    split_vote = (JobStatus.FAILED, None, None, "no_majority")
    _job(session, "a3", CLIENT_A, 500, 1833, [(C1, FP_A, R1), (C3, FP_A, R2)], split_vote)


def _second_epoch(session: Session) -> None:
    b1_votes = [(C1, FP_A, R1), (C2, FP_A, R1), (C4, FP_A, R2)]  # C4 dissents in its class
    _job(session, "b1", CLIENT_B, WIDE, WIDE, b1_votes, ACCEPT_A, [C1, C2])
    b2_votes = [(C1, FP_A, R1), (C3, FP_B, R2), (C4, FP_A, R1)]  # another class, another hash
    _job(session, "b2", CLIENT_B, WIDE + 1, 2 * WIDE + 1, b2_votes, ACCEPT_A, [C1, C3, C4])
    _job(session, "a4", CLIENT_A, 777, 2610, [(C2, FP_B, R2), (C4, FP_B, R2)],
         (JobStatus.ACCEPTED, FP_B, R2, None), [C2, C4], expired=[C1])  # fmt: skip
    no_answer = (JobStatus.FAILED, None, None, "expired")
    _job(session, "a5", CLIENT_A, 10, 2620, [], no_answer, expired=[C1, C2])
    pending = (JobStatus.PENDING, None, None, None)  # undecided: stays out of every epoch
    _job(session, "a6", CLIENT_A, 20, 2640, [(C1, FP_A, R1)], pending)


def _close(ctx: Context, number: int, closed_at: int) -> bytes:
    """``open_epoch`` and ``build_document`` as ``close_epoch`` runs them, then the epoch is
    recorded as posted (what ``close_epoch`` does once the chain has it; the chain is left out)."""
    with session_scope(ctx.engine) as session:
        epoch = epochs.open_epoch(session)
        assert epoch is not None and epoch.number == number
        epoch.closed_at = closed_at  # the clock is the one thing that is not fixed
        session.add(epoch)
        doc = epochs.build_document(session, ctx, epoch)
        raw = epochfile.canonical_bytes(doc)
        epoch.status, epoch.root = EpochStatus.POSTED, doc["root"]
        epoch.file_hash = "0x" + epochfile.file_hash(raw).hex()
        session.add(epoch)
    return raw


def _check_vector(raw: bytes, number: int) -> None:
    path = VECTORS / f"epoch-{number:06d}.json"
    if os.environ.get("INFERLEDGER_WRITE_VECTORS") == "1":
        path.write_bytes(raw)
    assert path.exists(), f"{path.name} is missing: see this module's docstring"
    assert raw == path.read_bytes()


def test_epoch_document_is_byte_identical_to_the_vectors(ctx: Context) -> None:
    with session_scope(ctx.engine) as session:
        _first_epoch(session)
    first = _close(ctx, 1, 1_700_000_500)
    _check_vector(first, 1)
    with session_scope(ctx.engine) as session:
        _second_epoch(session)
    second = _close(ctx, 2, 1_700_000_900)
    _check_vector(second, 2)

    doc = epochfile.parse(second)
    jobs = {j["job_id"]: j for j in doc["jobs"]}
    assert set(jobs) == {_h(t) for t in ("b1", "b2", "a4", "a5")}  # a6 is undecided
    assert "outputs" in jobs[_h("b2")]["votes"][0] and "input_row_hashes" in jobs[_h("b2")]
    assert all("outputs" not in v for t in ("b1", "a4") for v in jobs[_h(t)]["votes"])
    assert jobs[_h("a5")]["votes"] == [] and len(jobs[_h("a4")]["votes"]) == 2  # none expired
    assert doc["previous"]["root"] == epochfile.parse(first)["root"]
    with Session(ctx.engine) as session:
        frozen = {j.id: j.epoch for j in session.exec(select(Job).order_by(col(Job.id))).all()}
        assert session.exec(select(Epoch.jobs).order_by(col(Epoch.number))).all() == [3, 4]
    assert frozen == {
        **{_h(t): 1 for t in ("a1", "a2", "a3")},
        **{_h(t): 2 for t in ("b1", "b2", "a4", "a5")},
        _h("a6"): None,
    }
    with session_scope(ctx.engine) as session:  # nothing decided since: no third epoch
        assert epochs.open_epoch(session) is None


def test_epoch_sqlite_pages_in_memory_puts_the_connection_back(sqlite_url: str) -> None:
    engine = engine_for(sqlite_url)
    with session_scope(engine) as session:
        conn = session.connection()

        def pragmas() -> tuple[int, int]:
            return (
                conn.exec_driver_sql("PRAGMA mmap_size").scalar_one(),
                conn.exec_driver_sql("PRAGMA cache_size").scalar_one(),
            )

        before = pragmas()
        with epochs._sqlite_pages_in_memory(session):
            assert pragmas() == (epochs.SQLITE_MMAP_BYTES, -epochs.SQLITE_CACHE_KIB)
        assert pragmas() == before
        with pytest.raises(RuntimeError), epochs._sqlite_pages_in_memory(session):
            raise RuntimeError("the block failed")
        assert pragmas() == before
