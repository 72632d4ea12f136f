"""What a worker has earned that is not yet claimable: its contributor's pay for jobs the
worker voted on with the consensus, in jobs not yet under a posted epoch root; and what a
contributor has earned in all, and how much of it a posted epoch root holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, and_, col, func, or_, select

from ledger.journal import TransferKind, contributor_account
from ledger.models import Assignment, AssignmentStatus, Epoch, EpochStatus, Job, Transfer, Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingEarnings:
    pending_wei: int  # paid to the contributor for this worker's votes, not yet claimable
    pending_jobs: int  # the accepted jobs behind it
    posted_epoch: int  # the newest posted epoch (0: none yet)


def newest_posted_epoch(session: Session) -> int:
    """The newest posted epoch's number; 0 before the first."""
    posted = session.exec(
        select(func.max(Epoch.number)).where(Epoch.status == EpochStatus.POSTED)
    ).one()
    return int(posted or 0)


def pending_of(session: Session, worker: Worker) -> PendingEarnings:
    """Read-only. Reads the jobs not yet in a posted epoch (decided since the last close, or
    still open), so its cost follows the traffic of one epoch, not the worker's history."""
    posted_epoch = newest_posted_epoch(session)
    amounts = session.exec(
        select(Transfer.amount_wei)
        .join(Job, col(Job.id) == col(Transfer.job_id))
        .join(
            Assignment,
            and_(
                col(Assignment.job_id) == col(Job.id),
                col(Assignment.worker) == worker.address,
            ),
        )
        .where(
            or_(col(Job.epoch).is_(None), col(Job.epoch) > posted_epoch),
            Assignment.status == AssignmentStatus.SUBMITTED,
            Transfer.kind == TransferKind.PAY,
            Transfer.credit_account_id == contributor_account(worker.contributor),
        )
    ).all()
    return PendingEarnings(sum(int(a) for a in amounts), len(amounts), posted_epoch)


@dataclass(frozen=True)
class ContributorEarnings:
    earned_wei: int  # every payment credited to the contributor for its devices' votes
    posted_wei: int  # of which under the newest posted epoch root (that epoch's leaf)
    posted_epoch: int  # the newest posted epoch (0: none yet)

    @property
    def pending_wei(self) -> int:
        """Earned, not yet in a posted epoch (it will be in the next one)."""
        return self.earned_wei - self.posted_wei


def pay_by_job_epoch(session: Session, contributor: str) -> list[tuple[int, int | None]]:
    """Every payment to ``contributor``, with the epoch of its job (None: in no epoch yet)."""
    rows = session.exec(
        select(Transfer.amount_wei, Job.epoch)
        .join(Job, col(Job.id) == col(Transfer.job_id))
        .where(
            Transfer.kind == TransferKind.PAY,
            Transfer.credit_account_id == contributor_account(contributor),
        )
    ).all()
    return [(int(amount), epoch) for amount, epoch in rows]  # amounts are text on SQLite


def contributor_earnings(session: Session, contributor: str) -> ContributorEarnings:
    """Read-only. What ``contributor`` has earned, and how much of it the newest posted
    epoch's earnings leaf holds (the leaf is cumulative: every pay of its jobs and earlier)."""
    posted_epoch = newest_posted_epoch(session)
    rows = pay_by_job_epoch(session, contributor)
    earned = sum(amount for amount, _ in rows)
    under_root = sum(
        amount for amount, epoch in rows if epoch is not None and epoch <= posted_epoch
    )
    return ContributorEarnings(earned, under_root, posted_epoch)
