"""What a worker has earned that is not yet claimable: its contributor's pay for jobs the
worker voted on with the consensus, in jobs not yet under a posted epoch root."""

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


def pending_of(session: Session, worker: Worker) -> PendingEarnings:
    """Read-only. Reads the jobs not yet in a posted epoch (decided since the last close, or
    still open), so its cost follows the traffic of one epoch, not the worker's history."""
    posted = session.exec(
        select(func.max(Epoch.number)).where(Epoch.status == EpochStatus.POSTED)
    ).one()
    posted_epoch = int(posted or 0)
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
