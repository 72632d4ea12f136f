"""The jobs of the chaos scenario (``inferledger.chaos``): waves of jobs whose replicas have
all answered, written into the ledger's database as the API leaves them, and the audit that
each was decided once, with exactly the transfers its votes call for.

Three shapes of votes, so every branch of a decision that moves money is exercised without
a chain: two replicas agree (accepted, two paid), two of three agree (accepted, the two
paid), three disagree at ``max_replicas`` (failed, refunded in full).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from ledger import invariants, journal
from ledger.db import session_scope
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Transfer
from protocol.pricing import split

CLIENT = "0x" + "c1" * 20
CONTRIBUTORS = tuple("0x" + f"{0xA0 + i:040x}" for i in range(3))
WORKERS = tuple("0x" + f"{0xB0 + i:040x}" for i in range(3))
PRICE_WEI = 10**20 + 7  # above 2**63: amounts must stay exact
DECIDED = (JobStatus.ACCEPTED, JobStatus.FAILED)
SEEDING = (TransferKind.DEPOSIT, TransferKind.HOLD)
TransferKey = tuple[str, str, str, int]  # kind, debit, credit, amount


class Shape(StrEnum):
    AGREE = "agree"  # 2 of 2 agree
    MAJORITY = "majority"  # 2 of 3 agree
    SPLIT = "split"  # 3 different answers: no consensus

    def votes(self) -> list[int]:
        """The result each contributor's worker gave (index into CONTRIBUTORS)."""
        return {"agree": [1, 1], "majority": [1, 2, 2], "split": [1, 2, 3]}[self.value]


SHAPES = (Shape.AGREE, Shape.AGREE, Shape.AGREE, Shape.MAJORITY, Shape.SPLIT)


@dataclass(frozen=True)
class SeededJob:
    id: str
    price_wei: int
    shape: Shape

    def expected(self, fee_bps: int) -> Counter[TransferKey]:
        """The transfers that deciding this job makes."""
        client, escrow = journal.client_account(CLIENT), journal.ESCROW
        out: Counter[TransferKey] = Counter()
        if self.shape == Shape.SPLIT:
            out[(TransferKind.REFUND, escrow, client, self.price_wei)] += 1
            return out
        votes = self.shape.votes()
        winner = Counter(votes).most_common(1)[0][0]
        agreeing = sorted(c for c, r in zip(CONTRIBUTORS, votes, strict=False) if r == winner)
        shares, fee = split(self.price_wei, fee_bps, agreeing)
        for contributor, share in shares.items():
            account = journal.contributor_account(contributor)
            out[(TransferKind.PAY, escrow, account, share)] += 1
        out[(TransferKind.FEE, escrow, journal.TREASURY, fee)] += 1
        return out


def _h32(tag: str) -> str:
    return "0x" + tag.encode().hex().rjust(64, "0")[-64:]


def _job_rows(seeded: SeededJob, now: int) -> list[Job | Assignment]:
    votes = seeded.shape.votes()
    job = Job(
        id=seeded.id,
        client=CLIENT,
        model_hash=_h32("chaos-model"),
        input_hash=_h32(seeded.id[-16:]),
        rows=1,
        price_wei=seeded.price_wei,
        voucher_cumulative_wei=seeded.price_wei,
        voucher_expiry=now + 7200,
        voucher_signature="0x" + "00" * 65,
        inputs_json="{}",
        replicas_wanted=len(votes),
        status=JobStatus.SUBMITTED,
    )
    rows: list[Job | Assignment] = [job]
    for contributor, worker, result in zip(CONTRIBUTORS, WORKERS, votes, strict=False):
        rows.append(
            Assignment(
                job_id=seeded.id,
                worker=worker,
                contributor=contributor,
                deadline=now + 3600,
                status=AssignmentStatus.SUBMITTED,
                fingerprint=_h32("chaos-class"),
                fingerprint_json=json.dumps({"class": "chaos"}),
                result_hash=_h32(f"result-{result}"),
                signature="0x" + "11" * 65,
                outputs_json=json.dumps({"result": result}),
                submitted_at=now,
            )
        )
    return rows


def seed_wave(engine: Engine, count: int, first: int) -> list[SeededJob]:
    """``count`` submitted jobs in one short unit of work: the client's deposit and the hold
    of the wave's prices in escrow (two transfers, so that seeding holds the database's
    write lock briefly), the jobs and their answered assignments."""
    now = int(time.time())
    wave = [
        SeededJob(
            "0x" + uuid.uuid4().hex * 2, PRICE_WEI + first + i, SHAPES[(first + i) % len(SHAPES)]
        )
        for i in range(count)
    ]
    client = journal.client_account(CLIENT)
    with session_scope(engine) as session:
        total, tag = sum(j.price_wei for j in wave), wave[0].id
        journal.post_all(
            session,
            [
                TransferSpec(f"deposit:{tag}", journal.VAULT, client, total, TransferKind.DEPOSIT),
                TransferSpec(f"hold:{tag}", client, journal.ESCROW, total, TransferKind.HOLD),
            ],
        )
        session.add_all([row for j in wave for row in _job_rows(j, now)])
        session.flush()
        invariants.check_money(session)
    return wave


def undecided(engine: Engine) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(Job).where(col(Job.status).not_in(DECIDED))
        return int(session.exec(query).one())


@dataclass(frozen=True)
class Audit:
    jobs: int
    lost: int  # not decided
    wrong: int  # decided otherwise than the votes call for
    doubled: int  # with a transfer beyond its expected ones (an effect applied twice)
    #              or a decision's transfer for no seeded job
    missing: int  # decided, but an expected transfer is absent


def audit(engine: Engine, seeded: list[SeededJob], fee_bps: int) -> Audit:
    """Compare every seeded job's status and transfers with what its votes call for, then
    run every invariant, a replay of the whole journal against the balances included."""
    with Session(engine) as session:
        status = dict(session.exec(select(Job.id, Job.status)).all())
        effects: dict[str, Counter[TransferKey]] = defaultdict(Counter)
        decisions = select(Transfer).where(col(Transfer.kind).not_in(SEEDING))
        for t in session.exec(decisions).all():
            key = (t.kind, t.debit_account_id, t.credit_account_id, t.amount_wei)
            effects[str(t.job_id)][key] += 1
        invariants.check_full(session)
    lost = wrong = missing = 0
    doubled = len(effects.keys() - {job.id for job in seeded})  # moved money for no such job
    for job in seeded:
        if status.get(job.id) not in DECIDED:
            lost += 1
            continue
        want = JobStatus.FAILED if job.shape == Shape.SPLIT else JobStatus.ACCEPTED
        wrong += status[job.id] != want
        expected, got = job.expected(fee_bps), effects[job.id]
        doubled += bool(got - expected)
        missing += bool(expected - got)
    return Audit(len(seeded), lost, wrong, doubled, missing)
