"""On-chain actions of the people in the system, done with their own keys: depositing with an
EIP-2612 permit and withdrawing after notice (clients), staking, registering a device key,
unbonding and claiming (contributors). Used by the demo, the tests and the ``client`` and
``wallet`` commands; reverts surface as ``ChainError`` named like the Solidity error."""

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


def chain_deadline(client: ChainClient, valid_s: int) -> int:
    """A signature's deadline ``valid_s`` from now as the contracts see it: the newest block's
    time, which a development chain can run ahead of the wall clock (time moved forward,
    a busy node), or the wall clock if that is later."""
    latest = int(client.w3.eth.get_block("latest")["timestamp"])
    return max(latest, int(time.time())) + valid_s


def deposit_with_permit(client: ChainClient, amount_wei: int) -> None:
    """Deposit into the vault in one transaction, approving it by an EIP-2612 signature."""
    owner, vault = client.address, client.deployment.vault
    deadline = chain_deadline(client, 3600)
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


def stake(contributor: ChainClient, amount_wei: int) -> None:
    """Approve the registry for ``amount_wei`` and bond it."""
    registry = contributor.deployment.registry
    contributor.transact(contributor.token.functions.approve(registry, amount_wei), "approve")
    contributor.transact(contributor.registry.functions.stake(amount_wei), "stake")


def register_device(contributor: ChainClient, device_key: str | bytes, valid_s: int = 600) -> str:
    """Register a device key to the contributor; the device signs to prove it holds the key."""
    key = device_key if isinstance(device_key, bytes) else bytes.fromhex(device_key[2:])
    worker = Account.from_key(key).address
    deadline = chain_deadline(contributor, valid_s)
    sig = sign_registration(
        contributor.deployment.registry_domain, worker, contributor.address, deadline, key
    )
    contributor.transact(
        contributor.registry.functions.registerWorker(worker, deadline, sig), "registerWorker"
    )
    return str(worker)


def stake_and_register(contributor: ChainClient, stake_wei: int, worker_key: str) -> str:
    """Stake, then register the device key."""
    stake(contributor, stake_wei)
    return register_device(contributor, worker_key)


def request_unbond(contributor: ChainClient, amount_wei: int) -> None:
    """Move bonded stake to unbonding; it can be withdrawn after the unbonding delay."""
    contributor.transact(contributor.registry.functions.requestUnbond(amount_wei), "requestUnbond")


def withdraw_unbonded(contributor: ChainClient) -> None:
    contributor.transact(contributor.registry.functions.withdrawUnbonded(), "withdrawUnbonded")


def request_withdrawal(client: ChainClient, amount_wei: int) -> None:
    """Give notice to withdraw part of a deposit; ``withdraw`` pays it after the delay."""
    client.transact(client.vault.functions.requestWithdrawal(amount_wei), "requestWithdrawal")


def withdraw(client: ChainClient) -> None:
    client.transact(client.vault.functions.withdraw(), "withdraw")


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
