"""Deploy the four contracts from Hardhat's artifacts with web3.py and link them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from ledger.chain.client import ChainClient
from protocol.contracts import Deployment, artifact

logger = logging.getLogger(__name__)


def _deploy_one(w3: Web3, artifacts_dir: Path, name: str, key: str, *args: Any) -> tuple[str, int]:
    data = artifact(artifacts_dir, name)
    factory = w3.eth.contract(abi=data["abi"], bytecode=data["bytecode"])
    account = Account.from_key(key)
    tx = factory.constructor(*args).build_transaction(
        {
            "from": account.address,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
    )
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise RuntimeError(f"deploying {name} failed")
    logger.info("deployed %s at %s (gas %s)", name, receipt["contractAddress"], receipt["gasUsed"])
    return str(receipt["contractAddress"]), int(receipt["gasUsed"])


def deploy(
    w3: Web3,
    artifacts_dir: Path,
    admin_key: str,
    *,
    treasury: str,
    min_stake_wei: int,
    challenge_window_s: int,
    withdrawal_delay_s: int = 86_400,
    unbonding_delay_s: int = 7 * 86_400,
    slash_bps: int = 1_000,
    slash_pool: str | None = None,
) -> tuple[Deployment, int]:
    """Deploy and link; the admin key also holds the settler and guardian roles.
    Slashed stake goes to ``slash_pool`` (the treasury unless named). Returns (deployment, gas)."""
    admin = Account.from_key(admin_key).address
    start_block = w3.eth.block_number
    token, g1 = _deploy_one(w3, artifacts_dir, "ComputeToken", admin_key, admin)
    vault, g2 = _deploy_one(
        w3, artifacts_dir, "PaymentVault", admin_key, token, admin, withdrawal_delay_s
    )
    registry, g3 = _deploy_one(
        w3,
        artifacts_dir,
        "StakeRegistry",
        admin_key,
        token,
        admin,
        min_stake_wei,
        unbonding_delay_s,
        slash_bps,
        slash_pool or treasury,
    )
    settlement, g4 = _deploy_one(
        w3, artifacts_dir, "EpochSettlement", admin_key, token, admin, treasury, challenge_window_s
    )
    deployment = Deployment(
        chain_id=int(w3.eth.chain_id),
        token=token,
        vault=vault,
        registry=registry,
        settlement=settlement,
        block=start_block,
    )
    client = ChainClient(w3, deployment, artifacts_dir, admin_key)
    client.transact(client.vault.functions.setSettlement(settlement), "setSettlement")
    client.transact(client.settlement.functions.setVault(vault), "setVault")
    client.transact(client.registry.functions.setSettlement(settlement), "registry.setSettlement")
    return deployment, g1 + g2 + g3 + g4 + client.gas_used
