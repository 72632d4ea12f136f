"""A contributor's view of its devices and earnings, from the chain and the API together.

Devices: every key registered to the wallet (``WorkerRegistered`` events) with its state on
chain (removed, jailed, eligible; or registered but not eligible, or so because its stake is
unbonding) and, from the API, when it was last seen and what it holds.

Earnings, in four parts that add up to what the wallet has earned:

- pending: earned for accepted jobs not yet in a posted epoch (the API's journal);
- in a posted epoch: under a posted root still inside its challenge window;
- claimable: under the newest final root, not yet claimed (``claim`` sends it);
- claimed: ``EpochSettlement.claimedOf`` on chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from web3 import Web3

from inferledger.client import raise_for
from inferledger.errors import NotFound
from ledger.chain.client import ChainClient
from protocol.contracts import EpochRecord

MAX_EPOCHS_BACK = 64  # epochs read back from the newest posted one to find the newest final


@dataclass(frozen=True)
class Device:
    address: str
    state: str  # eligible | registered | unbonding | jailed | removed
    online: bool
    last_seen_s_ago: float | None
    in_flight: int
    safety_faults: int
    liveness_faults: int
    agreed_streak: int


@dataclass(frozen=True)
class Stake:
    bonded_wei: int
    unbonding_wei: int
    unlock_at: int
    min_stake_wei: int


@dataclass(frozen=True)
class Earnings:
    pending_wei: int
    in_posted_epoch_wei: int
    claimable_wei: int
    claimed_wei: int
    posted_epoch: int  # the newest posted epoch (0: none)
    posted_claimable_at: int  # when it becomes final (0: no epoch)
    final_epoch: int  # the newest final epoch (0: none)
    final_cumulative_wei: int  # the wallet's leaf in it
    final_proof: list[str] = field(default_factory=list)


def stake_of(chain: ChainClient, contributor: str) -> Stake:
    who = Web3.to_checksum_address(contributor)
    registry = chain.registry.functions
    unbonding, unlock_at = chain.call(registry.unbondingOf(who))
    return Stake(
        int(chain.call(registry.stakeOf(who))),
        int(unbonding),
        int(unlock_at),
        int(chain.call(registry.minStake())),
    )


def devices_of(chain: ChainClient, http: httpx.Client, contributor: str) -> list[Device]:
    who = Web3.to_checksum_address(contributor)
    logs = chain.registry.events.WorkerRegistered.get_logs(
        from_block=chain.deployment.block, argument_filters={"contributor": who}
    )
    seen = {d["address"]: d for d in raise_for(http.get(f"/v1/contributors/{who}/devices"))}
    stake = stake_of(chain, who)
    out = []
    for worker in sorted({str(log["args"]["worker"]) for log in logs}):
        registry = chain.registry.functions
        active = bool(chain.call(registry.workerActive(worker)))
        jailed = bool(chain.call(registry.jailed(worker)))
        if not active:
            state = "removed"
        elif jailed:
            state = "jailed"
        elif stake.bonded_wei >= stake.min_stake_wei:
            state = "eligible"
        else:
            state = "unbonding" if stake.unbonding_wei else "registered"
        api: dict[str, Any] = seen.get(worker, {})
        out.append(
            Device(
                worker,
                state,
                bool(api.get("online", False)),
                api.get("last_seen_s_ago"),
                int(api.get("in_flight", 0)),
                int(api.get("safety_faults", 0)),
                int(api.get("liveness_faults", 0)),
                int(api.get("agreed_streak", 0)),
            )
        )
    return out


def _leaf(http: httpx.Client, epoch: int, who: str) -> tuple[int, list[str]]:
    try:
        proof = raise_for(http.get(f"/v1/epochs/{epoch}/proofs/{who}"))
    except NotFound:  # nothing earned up to this epoch
        return 0, []
    return int(proof["cumulative_wei"]), list(proof["proof"])


def earnings_of(chain: ChainClient, http: httpx.Client, contributor: str) -> Earnings:
    who = Web3.to_checksum_address(contributor)
    api = raise_for(http.get(f"/v1/contributors/{who}/earnings"))
    posted_epoch, posted_wei = int(api["posted_epoch"]), int(api["posted_wei"])
    claimed = int(chain.call(chain.settlement.functions.claimedOf(who)))
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    posted_claimable_at = final_epoch = final_cumulative = 0
    proof: list[str] = []
    for n in range(posted_epoch, max(0, posted_epoch - MAX_EPOCHS_BACK), -1):
        record = EpochRecord.from_call(chain.call(chain.settlement.functions.epochs(n)))
        if n == posted_epoch:
            posted_claimable_at = record.claimable_at
        if not record.vetoed and record.claimable_at <= now:
            final_epoch = n
            final_cumulative, proof = _leaf(http, n, who)
            break
    return Earnings(
        pending_wei=int(api["pending_wei"]),
        in_posted_epoch_wei=posted_wei - max(final_cumulative, claimed),
        claimable_wei=max(0, final_cumulative - claimed),
        claimed_wei=claimed,
        posted_epoch=posted_epoch,
        posted_claimable_at=posted_claimable_at,
        final_epoch=final_epoch,
        final_cumulative_wei=final_cumulative,
        final_proof=proof,
    )
