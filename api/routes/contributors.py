"""Contributor routes: the devices registered under a wallet and their state as the
scheduler sees it, and the wallet's earnings not yet under a posted root (public: everything
here is derived from public chain records and the devices' own activity)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from sqlmodel import col, select

from api.deps import ContextDep, SessionDep
from api.schemas import ContributorEarningsPublic, DevicePublic
from ledger.auth import checked_address
from ledger.earnings import contributor_earnings
from ledger.models import Worker
from ledger.scheduler import agreed_streaks, in_flight

router = APIRouter(prefix="/v1/contributors", tags=["contributors"])


@router.get("/{address}/devices", response_model=list[DevicePublic])
def devices(address: str, session: SessionDep, ctx: ContextDep) -> list[DevicePublic]:
    """Every device key that has signed in under ``address``: eligible (registered, staked,
    not jailed on chain), seen within ``worker_seen_s``, its work in flight, its faults and
    its run of agreed replicated jobs (adaptive replication's trust)."""
    owner = checked_address(address)
    rows = session.exec(
        select(Worker).where(Worker.contributor == owner).order_by(col(Worker.address))
    ).all()
    busy = in_flight(session)
    trust = agreed_streaks(session, [w.address for w in rows])
    now = time.time()
    return [
        DevicePublic(
            address=w.address,
            eligible=w.eligible,
            online=now - w.last_seen <= ctx.settings.worker_seen_s,
            last_seen_s_ago=round(max(0.0, now - w.last_seen), 1) if w.last_seen else None,
            in_flight=busy.get(w.address, 0),
            safety_faults=w.safety_faults,
            liveness_faults=w.liveness_faults,
            agreed_streak=trust.get(w.address, 0),
        )
        for w in rows
    ]


@router.get("/{address}/earnings", response_model=ContributorEarningsPublic)
def earnings(address: str, session: SessionDep) -> ContributorEarningsPublic:
    """Earned in all, the part under the newest posted epoch's root (claimable from the
    chain once that epoch is final), and the rest, pending until the next epoch is posted."""
    owner = checked_address(address)
    found = contributor_earnings(session, owner)
    return ContributorEarningsPublic(
        contributor=owner,
        earned_wei=str(found.earned_wei),
        posted_wei=str(found.posted_wei),
        pending_wei=str(found.pending_wei),
        posted_epoch=found.posted_epoch,
    )
