"""A chain client for one hot settler key: its own nonce allocator (web3.py has none),
receipt waits with a timeout, and reverts decoded into named ``ChainError``s."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound

from ledger.chain.revert import ErrorDecoder
from ledger.errors import ChainError
from protocol.contracts import CONTRACT_NAMES, Deployment, artifact

logger = logging.getLogger(__name__)
RECEIPT_POLL_S = 0.1
CALL_BATCH = 500  # calls in one JSON-RPC batch (call_many)


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
        receipt_timeout_s: float = 30.0,
        max_replacements: int = 3,
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.timeout_s = timeout_s
        abis = {name: artifact(artifacts_dir, name)["abi"] for name in CONTRACT_NAMES}
        self.errors = ErrorDecoder(abis.values())
        addresses = deployment.addresses
        self.contracts: dict[str, Contract] = {
            name: w3.eth.contract(address=Web3.to_checksum_address(addresses[name]), abi=abis[name])
            for name in CONTRACT_NAMES
        }
        self.account = Account.from_key(key) if key else None
        self._nonce_lock = threading.Lock()
        self._next_nonce: int | None = None
        self.gas_used = 0
        self.receipt_timeout_s = receipt_timeout_s
        self.max_replacements = max_replacements
        self.replacements = 0

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

    def call_many(self, fns: list[Any], what: str = "call") -> list[Any]:
        """``call`` for each of ``fns``, answered in order, over JSON-RPC batches of
        ``CALL_BATCH`` requests: one HTTP exchange a batch instead of one a call (100 clients'
        ``redeemedOf`` at an epoch's close: about 1 s one by one)."""
        out: list[Any] = []
        for start in range(0, len(fns), CALL_BATCH):
            with self.errors.mapped(what), self.w3.batch_requests() as batch:
                for fn in fns[start : start + CALL_BATCH]:
                    batch.add(fn)
                answers = batch.execute()
            for answer in answers:
                if isinstance(answer, dict) and "error" in answer:  # one call of the batch failed
                    raise ChainError(f"{what}: {answer['error']}")
            out.extend(answers)
        return out

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
        """Sign and send ``fn`` from the settler key; wait for the receipt; raise on revert.

        A transaction not mined within ``receipt_timeout_s`` is replaced: the same nonce with
        fees raised by a quarter, up to ``max_replacements`` times. Whichever version is mined
        first is the one; the nonce makes the others void, so the call takes effect once."""
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
            try:
                sent = [self._send(tx)]
            except Exception:
                self._next_nonce = None  # resync from the chain on the next send
                raise
        receipt = self._await(tx, sent, what)
        self.gas_used += int(str(receipt["gasUsed"]))
        if receipt["status"] != 1:
            raise ChainError(
                f"{what}: transaction {bytes(receipt['transactionHash']).hex()} failed"
            )
        logger.info(
            "%s mined in block %s, gas %s", what, receipt["blockNumber"], receipt["gasUsed"]
        )
        return receipt

    def _send(self, tx: dict[str, Any]) -> bytes:
        if self.account is None:
            raise ChainError("this chain client has no key")
        signed = self.account.sign_transaction(tx)
        return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))

    def _await(self, tx: dict[str, Any], sent: list[bytes], what: str) -> dict[str, Any]:
        for attempt in range(self.max_replacements + 1):
            receipt = self._first_receipt(sent, self.receipt_timeout_s)
            if receipt is not None:
                return receipt
            if attempt == self.max_replacements:
                break
            tx = _bumped(tx)
            try:
                sent.append(self._send(tx))
                self.replacements += 1
                logger.warning(
                    "%s not mined in %.0f s: replaced (nonce %s)",
                    what,
                    self.receipt_timeout_s,
                    tx["nonce"],
                )
            except Exception as exc:  # e.g. "nonce too low": an earlier version was just mined
                logger.info("%s: replacement not sent (%s); waiting for the sent ones", what, exc)
        receipt = self._first_receipt(sent, self.receipt_timeout_s)
        if receipt is None:
            raise ChainError(f"{what}: not mined after {len(sent)} versions (nonce {tx['nonce']})")
        return receipt

    def _first_receipt(self, hashes: list[bytes], timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            for tx_hash in hashes:
                try:
                    return dict(self.w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
                except TransactionNotFound:
                    continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(RECEIPT_POLL_S)


def _bumped(tx: dict[str, Any]) -> dict[str, Any]:
    """The same transaction with fees raised by a quarter (nodes need at least a tenth)."""
    out = dict(tx)
    for field in ("maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
        if field in out:
            out[field] = int(out[field]) * 5 // 4 + 1
    return out
