"""What the auditor reads from the chain: the contracts' events since deployment, by block.

Everything the audit trusts besides signatures comes from here: which epochs were posted
(and in which block), when each worker key was registered to a contributor and when it was
retired, what the vault redeemed from each client, and what was claimed, paid in fees and
slashed. Nothing comes from the operator's database or API.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3.contract import Contract

from protocol.contracts import Deployment


@dataclass(frozen=True)
class Registration:
    """A worker key's registration: a key belongs to one contributor forever."""

    contributor: str
    registered_block: int
    removed_block: int | None


@dataclass(frozen=True)
class Redemption:
    block: int
    client: str
    redeemed_wei: int  # the client's cumulative redeemed total after this redemption
    increase_wei: int


@dataclass
class ChainRecords:
    posted: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    registrations: dict[str, Registration] = field(default_factory=dict)
    redemptions: list[Redemption] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    fees_claimed_wei: int = 0
    slashed_wei: int = 0
    slash_paid_wei: int = 0  # tokens the registry sent to its slash pool

    def posted_block(self, epoch: int, file_hash: bytes) -> int | None:
        """The block of the EpochPosted event that posted this record (a vetoed epoch can be
        posted again; the record on chain is the last one)."""
        blocks = [
            int(e["blockNumber"])
            for e in self.posted.get(epoch, [])
            if bytes(e["args"]["fileHash"]) == file_hash
        ]
        return max(blocks) if blocks else None

    def redeemed_of(self, client: str, block: int) -> int:
        """The client's cumulative redeemed total as of ``block``."""
        totals = [
            r.redeemed_wei for r in self.redemptions if r.client == client and r.block <= block
        ]
        return max(totals, default=0)

    def redeemed_total(self, block: int) -> int:
        return sum(r.increase_wei for r in self.redemptions if r.block <= block)

    def registration_fault(
        self, worker: str, contributor: str, since_block: int, until_block: int
    ) -> str | None:
        """Why ``worker`` was not registered to ``contributor`` at some block of
        (since_block, until_block], or None when it was."""
        reg = self.registrations.get(worker.lower())
        if reg is None:
            return f"worker {worker} was never registered"
        if reg.contributor != contributor.lower():
            return f"worker {worker} is registered to {reg.contributor}, not {contributor}"
        if reg.registered_block > until_block:
            return (
                f"worker {worker} was registered in block {reg.registered_block}, after the epoch"
            )
        if reg.removed_block is not None and reg.removed_block <= since_block:
            return f"worker {worker} was removed in block {reg.removed_block}, before the epoch"
        return None


def _logs(event: Any, start: int) -> list[Any]:
    return list(event.get_logs(from_block=start))


def read_chain(w3: Web3, deployment: Deployment, contracts: dict[str, Contract]) -> ChainRecords:
    """Every event the audit needs, from the deployment block to the latest."""
    start = deployment.block
    settlement, vault = contracts["EpochSettlement"], contracts["PaymentVault"]
    registry, token = contracts["StakeRegistry"], contracts["ComputeToken"]
    records = ChainRecords()
    for e in _logs(settlement.events.EpochPosted, start):
        records.posted[int(e["args"]["epoch"])].append(e)
    for e in _logs(registry.events.WorkerRegistered, start):
        records.registrations[str(e["args"]["worker"]).lower()] = Registration(
            str(e["args"]["contributor"]).lower(), int(e["blockNumber"]), None
        )
    for e in _logs(registry.events.WorkerRemoved, start):
        worker = str(e["args"]["worker"]).lower()
        reg = records.registrations.get(worker)
        if reg is not None and reg.removed_block is None:
            records.registrations[worker] = Registration(
                reg.contributor, reg.registered_block, int(e["blockNumber"])
            )
    records.redemptions = [
        Redemption(
            int(e["blockNumber"]),
            str(e["args"]["client"]).lower(),
            int(e["args"]["cumulativeAmount"]),
            int(e["args"]["increase"]),
        )
        for e in _logs(vault.events.VoucherRedeemed, start)
    ]
    records.claims = _logs(settlement.events.Claimed, start)
    records.fees_claimed_wei = sum(
        int(e["args"]["amount"]) for e in _logs(settlement.events.FeesClaimed, start)
    )
    records.slashed_wei = sum(
        int(e["args"]["amount"]) for e in _logs(registry.events.Slashed, start)
    )
    pool = Web3.to_checksum_address(registry.functions.slashPool().call())
    records.slash_paid_wei = sum(
        int(e["args"]["value"])
        for e in token.events.Transfer.get_logs(
            from_block=start,
            argument_filters={"from": Web3.to_checksum_address(deployment.registry), "to": pool},
        )
    )
    return records
