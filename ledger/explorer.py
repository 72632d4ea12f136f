"""Read-only figures for the explorer's pages (``api/routes/explorer.py``): epochs with what
the chain index saw of their posting, per-epoch and per-minute counts, and each person's
figures per epoch. Lists are bounded (a page of epochs, a window of minutes, a page of
jobs) and read through indexes; a person's figures per epoch still read all of that
person's payments or jobs, as ``ledger.earnings`` does. Nothing here writes.

An epoch's *check* compares what the ledger recorded (root, file hash) with the newest
``EpochPosted`` event the chain index holds for it, and notes a later ``EpochVetoed``: a
cheap cross-check from the database alone. It is not the audit: ``inferledger audit``
re-verifies every signature, vote and payout from the chain and the files (docs/audit.md).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from sqlmodel import Session, col, func, select

from ledger.chain.index import args, events
from ledger.earnings import pay_by_job_epoch
from ledger.models import (
    Assignment,
    AssignmentStatus,
    Epoch,
    EpochStatus,
    Job,
    JobStatus,
    Slash,
)

EPOCHS_SHOWN = 50  # the newest epochs on the front page and in its charts
JOBS_SHOWN = 200  # jobs listed on an epoch's or a client's page
MINUTES_SHOWN = 60  # the jobs-per-minute chart: this many minutes up to the newest job


class CheckStatus:
    NOT_POSTED = "not posted"  # still building: nothing on chain yet
    NOT_INDEXED = "not indexed yet"  # posted, but the chain index has not read the event
    MATCHES = "matches chain"  # the indexed posting has the ledger's root and file hash
    VETOED = "vetoed"
    MISMATCH = "mismatch"  # the chain holds another root or file hash: look at it


@dataclass(frozen=True)
class EpochCheck:
    status: str
    chain_root: str | None = None
    chain_file_hash: str | None = None
    claimable_at: int | None = None  # final (claimable) from then unless vetoed
    block_number: int | None = None
    tx_hash: str | None = None

    @property
    def final(self) -> bool:
        return self.status == CheckStatus.MATCHES and (self.claimable_at or 0) <= time.time()


def newest_epochs(session: Session, limit: int = EPOCHS_SHOWN) -> list[Epoch]:
    """The newest ``limit`` epochs, oldest first."""
    rows = session.exec(select(Epoch).order_by(col(Epoch.number).desc()).limit(limit)).all()
    return list(reversed(rows))


def epoch_checks(session: Session, epochs: list[Epoch]) -> dict[int, EpochCheck]:
    """Each epoch's check against the chain index (see the module's docstring)."""
    one = str(epochs[0].number) if len(epochs) == 1 else None  # an epoch's page: its own
    found = events(session, "EpochSettlement", ("EpochPosted", "EpochVetoed"), subject=one)
    posted: dict[int, dict[str, str]] = {}
    where: dict[int, tuple[int, str]] = {}
    vetoed: set[int] = set()
    for event in found:  # in chain order: a re-posting after a veto replaces the vetoed one
        n = int(event.subject or 0)
        if event.event == "EpochPosted":
            posted[n], where[n] = args(event), (event.block_number, event.tx_hash)
            vetoed.discard(n)
        else:
            vetoed.add(n)
    return {
        e.number: _check(e, posted.get(e.number), where.get(e.number), e.number in vetoed)
        for e in epochs
    }


def _check(
    epoch: Epoch, posted: dict[str, str] | None, where: tuple[int, str] | None, vetoed: bool
) -> EpochCheck:
    if epoch.status != EpochStatus.POSTED:
        return EpochCheck(CheckStatus.NOT_POSTED)
    if posted is None or where is None:
        return EpochCheck(CheckStatus.NOT_INDEXED)
    root, file_hash = posted["root"].lower(), posted["fileHash"].lower()
    same = root == (epoch.root or "").lower() and file_hash == (epoch.file_hash or "").lower()
    status = CheckStatus.VETOED if vetoed else CheckStatus.MATCHES if same else CheckStatus.MISMATCH
    return EpochCheck(status, root, file_hash, int(posted["claimableAt"]), *where)


def previous_totals(session: Session, number: int) -> tuple[int, int]:
    """Cumulative payout and fees of the epoch before ``number`` (0, 0 before the first)."""
    before = session.get(Epoch, number - 1) if number > 1 else None
    if before is None:
        return 0, 0
    return before.cumulative_payout_wei, before.cumulative_fees_wei


def decisions_by_epoch(session: Session, numbers: list[int]) -> dict[int, dict[str, int]]:
    """Per epoch, its jobs counted by status (accepted, failed)."""
    rows = session.exec(
        select(Job.epoch, Job.status, func.count())
        .where(col(Job.epoch).in_(numbers))
        .group_by(col(Job.epoch), col(Job.status))
    ).all()
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for epoch, status, count in rows:
        counts[int(epoch or 0)][status] = int(count)
    return dict(counts)


def consensus_rate(counts: dict[str, int]) -> float | None:
    """Accepted jobs over decided ones; None when none was decided."""
    decided = counts.get(JobStatus.ACCEPTED, 0) + counts.get(JobStatus.FAILED, 0)
    return counts.get(JobStatus.ACCEPTED, 0) / decided if decided else None


def jobs_per_minute(session: Session, minutes: int = MINUTES_SHOWN) -> list[tuple[int, int]]:
    """(minute start, jobs submitted) for the ``minutes`` up to the newest job's, every
    minute present (zeros included); empty before the first job."""
    # per status, so that each is a seek in ix_job_status_created rather than a table scan
    statuses = list(JobStatus)
    newest = [
        session.exec(select(func.max(Job.created_at)).where(Job.status == s)).one()
        for s in statuses
    ]
    if all(n is None for n in newest):
        return []
    last = max(int(n) for n in newest if n is not None) // 60
    minute = col(Job.created_at) // 60  # SQLAlchemy renders integer division for each dialect
    rows = session.exec(
        select(minute, func.count())
        .where(col(Job.status).in_(statuses), col(Job.created_at) >= (last - minutes + 1) * 60)
        .group_by(minute)
    ).all()
    counts = {int(m): int(c) for m, c in rows}
    return [(m * 60, counts.get(m, 0)) for m in range(last - minutes + 1, last + 1)]


def jobs_page(
    session: Session, *, epoch: int | None = None, client: str | None = None
) -> tuple[list[Job], int]:
    """The first ``JOBS_SHOWN`` jobs of an epoch (in id order) or the newest of a client,
    and how many there are in all."""
    query = select(Job)
    count = select(func.count()).select_from(Job)
    if epoch is not None:
        query, count = query.where(Job.epoch == epoch), count.where(Job.epoch == epoch)
        query = query.order_by(col(Job.id))
    if client is not None:
        query, count = query.where(Job.client == client), count.where(Job.client == client)
        query = query.order_by(col(Job.created_at).desc(), col(Job.id))
    return list(session.exec(query.limit(JOBS_SHOWN)).all()), int(session.exec(count).one())


def votes_of(session: Session, job_ids: list[str]) -> dict[str, int]:
    """Submitted votes per job."""
    rows = session.exec(
        select(Assignment.job_id, func.count())
        .where(col(Assignment.job_id).in_(job_ids), Assignment.status == AssignmentStatus.SUBMITTED)
        .group_by(col(Assignment.job_id))
    ).all()
    return {job_id: int(n) for job_id, n in rows}


def earnings_by_epoch(session: Session, contributor: str) -> dict[int | None, int]:
    """What ``contributor`` was paid per epoch of its jobs (None: jobs in no epoch yet).
    The same payments as ``ledger.earnings.contributor_earnings``, split by epoch."""
    per_epoch: dict[int | None, int] = defaultdict(int)
    for amount, epoch in pay_by_job_epoch(session, contributor):
        per_epoch[epoch] += amount
    return dict(per_epoch)


def spend_by_epoch(session: Session, client: str) -> dict[int | None, int]:
    """What ``client`` was charged per epoch: its accepted jobs' prices (None: no epoch yet)."""
    rows = session.exec(
        select(Job.price_wei, Job.epoch).where(
            Job.client == client, Job.status == JobStatus.ACCEPTED
        )
    ).all()
    per_epoch: dict[int | None, int] = defaultdict(int)
    for price, epoch in rows:
        per_epoch[epoch] += int(price)
    return dict(per_epoch)


def slashes_of(session: Session, contributor: str) -> list[Slash]:
    """The slashes submitted against ``contributor``'s workers, newest first."""
    query = select(Slash).where(Slash.contributor == contributor)
    return list(session.exec(query.order_by(col(Slash.created_at).desc())).all())
