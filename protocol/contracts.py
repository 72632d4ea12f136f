"""Contract ABIs (from Hardhat's artifacts) and the deployment file (addresses, chain id).

Read-only knowledge every party needs: the ledger to send transactions, the worker to build
EIP-712 domains, the auditor to read events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.eip712 import REGISTRY_DOMAIN_NAME, VAULT_DOMAIN_NAME, Domain

CONTRACT_NAMES = ("ComputeToken", "PaymentVault", "StakeRegistry", "EpochSettlement")


def artifact(artifacts_dir: Path, name: str) -> dict[str, Any]:
    path = artifacts_dir / "contracts" / f"{name}.sol" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: compile the contracts first (make contracts)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@dataclass(frozen=True)
class EpochRecord:
    """``EpochSettlement.epochs(n)``, named: the one place that knows the getter's order."""

    root: bytes
    results_root: bytes
    file_hash: bytes
    cumulative_payout: int
    cumulative_fees: int
    posted_at: int
    claimable_at: int
    vetoed: bool

    @classmethod
    def from_call(cls, values: Sequence[Any]) -> EpochRecord:
        root, results, file_hash, payout, fees, posted, claimable, vetoed = values
        return cls(
            bytes(root),
            bytes(results),
            bytes(file_hash),
            int(payout),
            int(fees),
            int(posted),
            int(claimable),
            bool(vetoed),
        )


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    token: str
    vault: str
    registry: str
    settlement: str
    block: int

    @property
    def vault_domain(self) -> Domain:
        return Domain(VAULT_DOMAIN_NAME, self.chain_id, self.vault)

    @property
    def registry_domain(self) -> Domain:
        return Domain(REGISTRY_DOMAIN_NAME, self.chain_id, self.registry)

    @property
    def addresses(self) -> dict[str, str]:
        """Each contract's address by its name in ``CONTRACT_NAMES``."""
        return {
            "ComputeToken": self.token,
            "PaymentVault": self.vault,
            "StakeRegistry": self.registry,
            "EpochSettlement": self.settlement,
        }

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deployment:
        return cls(
            chain_id=int(data["chain_id"]),
            token=str(data["token"]),
            vault=str(data["vault"]),
            registry=str(data["registry"]),
            settlement=str(data["settlement"]),
            block=int(data.get("block", 0)),
        )

    @classmethod
    def load(cls, path: Path) -> Deployment:
        return cls.from_dict(json.loads(path.read_text()))
