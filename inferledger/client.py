"""A Python client for paying inference requests.

Each request carries a cumulative EIP-712 voucher: the client signs the running total it
agrees to pay, one price higher than its last voucher. The library keeps that total itself
and recovers it from the API (``max_voucher_wei``) when it starts, so a restarted client
never signs a voucher the API would refuse as not increasing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy.typing as npt
from eth_account import Account

from protocol import tensors
from protocol.contracts import Deployment
from protocol.eip712 import Voucher, sign_voucher


class ApiError(Exception):
    """The API refused a request: ``code`` is its stable error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


def raise_for(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        body = response.json()
        code, detail = str(body.get("error", "http_error")), str(body.get("detail", ""))
    except ValueError:
        code, detail = "http_error", response.text[:200]
    raise ApiError(response.status_code, code, detail)


class InferenceClient:
    def __init__(
        self, api_url: str, key: str, *, timeout_s: float = 30.0, voucher_ttl_s: int = 86_400
    ) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=timeout_s)
        self.account = Account.from_key(key)
        self.voucher_ttl_s = voucher_ttl_s
        self._lock = threading.Lock()
        self._cumulative_wei: int | None = None
        self._deployment: Deployment | None = None
        self._prices: dict[str, int] = {}

    @property
    def address(self) -> str:
        return str(self.account.address)

    def deployment(self) -> Deployment:
        if self._deployment is None:
            self._deployment = Deployment.from_dict(
                {**raise_for(self.http.get("/v1/chain")), "block": 0}
            )
        return self._deployment

    def models(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = raise_for(self.http.get("/v1/models"))
        self._prices = {m["model_hash"]: int(m["price_per_row_wei"]) for m in found}
        return found

    def balance(self) -> dict[str, Any]:
        result: dict[str, Any] = raise_for(self.http.get(f"/v1/clients/{self.address}"))
        return result

    def _next_cumulative(self, price_wei: int) -> int:
        if self._cumulative_wei is None:
            self._cumulative_wei = int(self.balance()["max_voucher_wei"])
        return self._cumulative_wei + price_wei

    def submit(self, model_hash: str, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
        """Sign the next voucher and submit the job; returns the job as the API sees it."""
        rows = next(iter(inputs.values())).shape[0]
        encoded = {name: tensors.encode(a) for name, a in inputs.items()}
        return self._submit(model_hash, rows, {"inputs": encoded})

    def submit_texts(self, model_hash: str, texts: list[str]) -> dict[str, Any]:
        """The same for a text model (``input_kind`` text): one row per text."""
        return self._submit(model_hash, len(texts), {"texts": list(texts)})

    def _submit(self, model_hash: str, rows: int, payload: dict[str, Any]) -> dict[str, Any]:
        if not self._prices:
            self.models()
        price = self._prices[model_hash] * rows
        with self._lock:  # vouchers must reach the API in increasing order
            cumulative = self._next_cumulative(price)
            voucher = Voucher(self.address, cumulative, int(time.time()) + self.voucher_ttl_s)
            sig = sign_voucher(self.deployment().vault_domain, voucher, self.account.key)
            body = {
                "model": model_hash,
                **payload,
                "voucher": {
                    "client": self.address,
                    "cumulative_amount_wei": str(cumulative),
                    "expiry": voucher.expiry,
                },
                "signature": "0x" + sig.hex(),
            }
            job: dict[str, Any] = raise_for(self.http.post("/v1/jobs", json=body))
            self._cumulative_wei = cumulative
        return job

    def result(self, job_id: str, wait_s: float = 10.0) -> dict[str, Any]:
        job: dict[str, Any] = raise_for(
            self.http.get(f"/v1/jobs/{job_id}", params={"wait_s": wait_s})
        )
        return job

    def wait(self, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.result(job_id, wait_s=min(10.0, max(0.0, deadline - time.monotonic())))
            if job["status"] in ("accepted", "failed") or time.monotonic() >= deadline:
                return job

    def run(
        self, model_hash: str, inputs: dict[str, npt.NDArray[Any]], timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Submit and wait for the decided job (result, attestations) or the timeout."""
        return self.wait(self.submit(model_hash, inputs)["job_id"], timeout_s)
