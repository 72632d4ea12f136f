"""A chain client for one hot settler key: its own nonce allocator (web3.py has none),
receipt waits with a timeout, and reverts decoded into named ``ChainError``s."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3
from web3.contract import Contract

from ledger.chain.revert import ErrorDecoder
from ledger.errors import ChainError
from protocol.contracts import CONTRACT_NAMES, Deployment, artifact

logger = logging.getLogger(__name__)


def connect(rpc_url: str, timeout_s: float = 30.0) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))


class ChainClient:
    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        artifacts_dir: Path,
        key: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.timeout_s = timeout_s
        abis = {name: artifact(artifacts_dir, name)["abi"] for name in CONTRACT_NAMES}
        self.errors = ErrorDecoder(abis.values())
        addresses = {
            "ComputeToken": deployment.token,
            "PaymentVault": deployment.vault,
            "StakeRegistry": deployment.registry,
            "EpochSettlement": deployment.settlement,
        }
        self.contracts: dict[str, Contract] = {
            name: w3.eth.contract(address=Web3.to_checksum_address(addresses[name]), abi=abis[name])
            for name in CONTRACT_NAMES
        }
        self.account = Account.from_key(key) if key else None
        self._nonce_lock = threading.Lock()
        self._next_nonce: int | None = None
        self.gas_used = 0

    @property
    def token(self) -> Contract:
        return self.contracts["ComputeToken"]

    @property
    def vault(self) -> Contract:
        return self.contracts["PaymentVault"]

    @property
    def registry(self) -> Contract:
        return self.contracts["StakeRegistry"]

    @property
    def settlement(self) -> Contract:
        return self.contracts["EpochSettlement"]

    @property
    def address(self) -> str:
        if self.account is None:
            raise ChainError("this chain client has no key")
        return str(self.account.address)

    def call(self, fn: Any, what: str = "call") -> Any:
        with self.errors.mapped(what):
            return fn.call()

    def _allocate_nonce(self) -> int:
        chain_next = self.w3.eth.get_transaction_count(
            Web3.to_checksum_address(self.address), "pending"
        )
        if self._next_nonce is None or chain_next > self._next_nonce:
            self._next_nonce = chain_next
        nonce = self._next_nonce
        self._next_nonce += 1
        return nonce

    def transact(self, fn: Any, what: str, gas: int | None = None) -> dict[str, Any]:
        """Sign and send ``fn`` from the settler key; wait for the receipt; raise on revert."""
        if self.account is None:
            raise ChainError(f"{what}: no key to sign with")
        with self.errors.mapped(what):
            params: dict[str, Any] = {"from": self.address}
            estimated = gas or fn.estimate_gas(params)
        with self._nonce_lock:
            nonce = self._allocate_nonce()
            tx = fn.build_transaction(
                {
                    **params,
                    "nonce": nonce,
                    "gas": int(estimated * 12 // 10) + 10_000,
                    "chainId": self.deployment.chain_id,
                }
            )
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception:
                self._next_nonce = None  # resync from the chain on the next send
                raise
        receipt = dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout_s))
        self.gas_used += int(str(receipt["gasUsed"]))
        if receipt["status"] != 1:
            raise ChainError(f"{what}: transaction {tx_hash.hex()} failed")
        logger.info(
            "%s mined in block %s, gas %s", what, receipt["blockNumber"], receipt["gasUsed"]
        )
        return receipt
