"""On-chain actions of the people in the system, done with their own keys: minting test
tokens (dev), depositing with an EIP-2612 permit, staking, registering a device key, and
claiming. Used by the demo and the end-to-end tests; each returns what it spent in gas."""

from __future__ import annotations

import time
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3

from ledger.chain.client import ChainClient
from protocol.contracts import Deployment
from protocol.eip712 import sign_registration


def actor(w3: Web3, deployment: Deployment, artifacts_dir: Path, key: str) -> ChainClient:
    return ChainClient(w3, deployment, artifacts_dir, key)


def deposit_with_permit(client: ChainClient, amount_wei: int) -> None:
    """Deposit into the vault in one transaction, approving it by an EIP-2612 signature."""
    owner, vault = client.address, client.deployment.vault
    deadline = int(time.time()) + 3600
    nonce = int(client.call(client.token.functions.nonces(owner)))
    signable = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {
                "name": "inferledger Compute Token",
                "version": "1",
                "chainId": client.deployment.chain_id,
                "verifyingContract": client.deployment.token,
            },
            "message": {
                "owner": owner,
                "spender": vault,
                "value": amount_wei,
                "nonce": nonce,
                "deadline": deadline,
            },
        }
    )
    if client.account is None:
        raise ValueError("a depositor needs a key")
    sig = Account.sign_message(signable, client.account.key)
    client.transact(
        client.vault.functions.depositWithPermit(
            amount_wei, deadline, sig.v, sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big")
        ),
        "depositWithPermit",
    )


def stake_and_register(contributor: ChainClient, stake_wei: int, worker_key: str) -> str:
    """Stake, then register the device key; the device signs to prove it holds the key."""
    registry = contributor.deployment.registry
    contributor.transact(contributor.token.functions.approve(registry, stake_wei), "approve")
    contributor.transact(contributor.registry.functions.stake(stake_wei), "stake")
    worker = Account.from_key(worker_key).address
    deadline = int(time.time()) + 600
    sig = sign_registration(
        contributor.deployment.registry_domain,
        worker,
        contributor.address,
        deadline,
        bytes.fromhex(worker_key.removeprefix("0x")),
    )
    contributor.transact(
        contributor.registry.functions.registerWorker(worker, deadline, sig), "registerWorker"
    )
    return str(worker)


def claim(
    claimer: ChainClient, epoch: int, account: str, cumulative_wei: int, proof: list[str]
) -> None:
    claimer.transact(
        claimer.settlement.functions.claim(
            epoch,
            Web3.to_checksum_address(account),
            cumulative_wei,
            [bytes.fromhex(p[2:]) for p in proof],
        ),
        "claim",
    )
