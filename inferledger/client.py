"""A Python client for paying inference requests.

Each request carries a cumulative EIP-712 voucher: the client signs the running total it
agrees to pay, one price higher than its last voucher. The library keeps that total itself
and recovers it from the API (``max_voucher_wei``) when it starts, so a restarted client
never signs a voucher the API would refuse as not increasing. When another process pays
with the same key meanwhile, the API refuses the voucher (``voucher_not_increasing`` or
``voucher_reused``, nothing charged); the library then reads the total again and signs once
more. When a request's fate is unknown (the connection broke), the next request reads it
from the API first.

``run`` submits and waits (a timeout raises ``JobTimeout``; a job that fails consensus or
times out in the ledger raises ``JobFailed`` and costs nothing) and returns a ``Receipt``
whose attestations are verified; ``receipt`` adds the verified Merkle proof once the job's
epoch is posted. ``submit`` and ``poll`` are the asynchronous pair.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy.typing as npt
from eth_account import Account

from inferledger.errors import (
    ApiError,
    ClientError,
    JobFailed,
    JobTimeout,
    NotFound,
    VoucherRefused,
    api_error,
)
from inferledger.receipts import Receipt, verify_attestations, verify_result_proof
from protocol import tensors
from protocol.contracts import Deployment
from protocol.eip712 import Voucher, sign_voucher

__all__ = ["ApiError", "InferenceClient", "Receipt", "raise_for"]

DECIDED = ("accepted", "failed")
RESYNC_CODES = ("voucher_not_increasing", "voucher_reused")
POLL_MAX_S = 10.0  # one long poll; the API caps it too (wait_max_s)


def raise_for(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        body = response.json()
        code, detail = str(body.get("error", "http_error")), str(body.get("detail", ""))
    except (ValueError, AttributeError):
        code, detail = "http_error", response.text[:200]
    raise api_error(response.status_code, code, detail)


class InferenceClient:
    def __init__(
        self,
        api_url: str,
        key: str | bytes | None,
        *,
        timeout_s: float = 30.0,
        voucher_ttl_s: int = 86_400,
        http: httpx.Client | None = None,
    ) -> None:
        self.http = http or httpx.Client(base_url=api_url, timeout=timeout_s)
        self.account = Account.from_key(key) if key is not None else None  # None: read only
        self.voucher_ttl_s = voucher_ttl_s
        self._lock = threading.Lock()
        self._cumulative_wei: int | None = None
        self._deployment: Deployment | None = None
        self._models: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        if self.account is None:
            raise ClientError("this client has no key: it can read jobs and models, not pay")
        return str(self.account.address)

    @property
    def cumulative_wei(self) -> int | None:
        """The last voucher total this client signed and the API admitted (None: not read)."""
        return self._cumulative_wei

    def deployment(self) -> Deployment:
        if self._deployment is None:
            self._deployment = Deployment.from_dict(
                {**raise_for(self.http.get("/v1/chain")), "block": 0}
            )
        return self._deployment

    # -- models, balance ---------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = raise_for(self.http.get("/v1/models"))
        self._models = {m["model_hash"].lower(): m for m in found}
        return found

    def model(self, name_or_hash: str) -> dict[str, Any]:
        """A model by its hash (0x...) or its name; ``NotFound`` if the API has none."""
        if not self._models:
            self.models()
        key = name_or_hash.lower()
        found = self._models.get(key) or next(
            (m for m in self._models.values() if m["name"].lower() == key), None
        )
        if found is None:
            raise NotFound(404, "unknown_model", f"the API serves no model {name_or_hash}")
        return found

    def balance(self) -> dict[str, Any]:
        """``ClientPublic``: deposited, available, held (pending jobs), charged, max voucher."""
        result: dict[str, Any] = raise_for(self.http.get(f"/v1/clients/{self.address}"))
        return result

    def recover(self) -> int:
        """Read the cumulative voucher total from the API (after a restart)."""
        self._cumulative_wei = int(self.balance()["max_voucher_wei"])
        return self._cumulative_wei

    # -- paying ------------------------------------------------------------------------
    def submit(
        self, model: str, inputs: dict[str, npt.NDArray[Any]], wait_s: float = 0.0
    ) -> dict[str, Any]:
        """Sign the next voucher and submit the job; returns the job as the API sees it.
        ``wait_s``: the API answers once the job is decided or the wait runs out (one
        exchange instead of two). Other threads of this client wait meanwhile to submit
        (vouchers must reach the API in order): for a client that sends one at a time."""
        rows = next(iter(inputs.values())).shape[0]
        encoded = {name: tensors.encode(a) for name, a in inputs.items()}
        return self._submit(model, rows, {"inputs": encoded}, wait_s)

    def submit_texts(self, model: str, texts: list[str], wait_s: float = 0.0) -> dict[str, Any]:
        """The same for a text model (``input_kind`` text): one row per text."""
        return self._submit(model, len(texts), {"texts": list(texts)}, wait_s)

    def _signed(self, model_hash: str, payload: dict[str, Any], cumulative: int) -> dict[str, Any]:
        if self.account is None:
            raise ClientError("this client has no key: it cannot sign vouchers")
        voucher = Voucher(self.address, cumulative, int(time.time()) + self.voucher_ttl_s)
        sig = sign_voucher(self.deployment().vault_domain, voucher, bytes(self.account.key))
        return {
            "model": model_hash,
            **payload,
            "voucher": {
                "client": self.address,
                "cumulative_amount_wei": str(cumulative),
                "expiry": voucher.expiry,
            },
            "signature": "0x" + sig.hex(),
        }

    def _submit(
        self, model: str, rows: int, payload: dict[str, Any], wait_s: float = 0.0
    ) -> dict[str, Any]:
        params = {"wait_s": min(wait_s, POLL_MAX_S)} if wait_s > 0 else None
        found = self.model(model)
        price = int(found["price_per_row_wei"]) * rows
        with self._lock:  # vouchers must reach the API in increasing order
            for attempt in range(2):
                if self._cumulative_wei is None:
                    self.recover()
                cumulative = (self._cumulative_wei or 0) + price
                body = self._signed(found["model_hash"], payload, cumulative)
                try:
                    job: dict[str, Any] = raise_for(
                        self.http.post("/v1/jobs", json=body, params=params)
                    )
                except VoucherRefused as exc:
                    if exc.code not in RESYNC_CODES or attempt:
                        raise
                    self._cumulative_wei = None  # another process paid with this key
                    continue
                except httpx.TransportError:
                    self._cumulative_wei = None  # admitted or not: ask the API next time
                    raise
                self._cumulative_wei = cumulative
                return job
        raise AssertionError("unreachable")  # pragma: no cover

    # -- results -----------------------------------------------------------------------
    def poll(self, job_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """The job now, or when decided within ``wait_s`` (a long poll)."""
        job: dict[str, Any] = raise_for(
            self.http.get(f"/v1/jobs/{job_id}", params={"wait_s": min(wait_s, POLL_MAX_S)})
        )
        return job

    def wait(self, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll until the job is decided or ``timeout_s`` passes; returns it either way."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.poll(job_id, wait_s=max(0.0, deadline - time.monotonic()))
            if job["status"] in DECIDED or time.monotonic() >= deadline:
                return job

    def receipt(self, job: dict[str, Any] | str) -> Receipt:
        """The job's receipt: attestations verified, and the Merkle proof of its result
        under the posted epoch's results root once there is one (verified too)."""
        if isinstance(job, str):
            job = self.poll(job)
        verify_attestations(job, self.deployment().registry_domain)
        proof = None
        if job["status"] == "accepted" and job["epoch"] is not None:
            try:
                proof = raise_for(
                    self.http.get(f"/v1/epochs/{job['epoch']}/results/{job['job_id']}")
                )
            except NotFound:  # the epoch is closed but not posted yet
                proof = None
            if proof is not None:
                verify_result_proof(job, proof)
        return Receipt(job, proof)

    def result(self, job_id: str, timeout_s: float = 60.0) -> Receipt:
        """Wait for a submitted job: its receipt, or ``JobTimeout`` / ``JobFailed``."""
        job = self.wait(job_id, timeout_s)
        if job["status"] not in DECIDED:
            raise JobTimeout(job_id, job["status"], timeout_s)
        if job["status"] == "failed":
            raise JobFailed(job_id, job.get("failure"), job)
        return self.receipt(job)

    def run(
        self, model: str, inputs: dict[str, npt.NDArray[Any]], timeout_s: float = 60.0
    ) -> Receipt:
        """Submit and wait for the decided job (synchronous, with a timeout)."""
        return self.result(self.submit(model, inputs)["job_id"], timeout_s)

    def run_texts(self, model: str, texts: list[str], timeout_s: float = 60.0) -> Receipt:
        return self.result(self.submit_texts(model, texts)["job_id"], timeout_s)
