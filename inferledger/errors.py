"""Errors of the client library and the command line; the API's stable error codes become
typed exceptions here, so code can catch what it can handle and the CLI can print one line.

ClientError
├── ApiError                    the API refused a request: ``status``, ``code``, ``detail``
│   ├── PaymentRequired         the deposit, less what is owed, does not cover the price (402)
│   ├── VoucherRefused          bad signature, expired, too low, not increasing, reused (400/409)
│   ├── InvalidInput            unknown model, malformed tensor or text, invalid body (400/422)
│   ├── NotFound                no such job, epoch or proof (404)
│   └── Unavailable             no capacity or busy: nothing was charged, retry later (503)
├── JobTimeout                  the job was not decided within the caller's timeout
├── JobFailed                   the job failed consensus or timed out in the ledger: not charged
├── ReceiptInvalid              an attestation or Merkle proof that does not verify
└── AmountError                 a token amount that is not a positive number of at most 18 decimals
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Root of the client library's errors."""


class ApiError(ClientError):
    """The API refused a request: ``code`` is its stable error code (``api/errors.py``)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class PaymentRequired(ApiError):
    pass


class VoucherRefused(ApiError):
    pass


class InvalidInput(ApiError):
    pass


class NotFound(ApiError):
    pass


class Unavailable(ApiError):
    pass


INPUT_CODES = frozenset(
    {
        "unknown_model",
        "invalid_tensor",
        "invalid_text",
        "text_too_long",
        "wrong_input_kind",
        "invalid_body",
        "invalid_address",
    }
)


def api_error(status: int, code: str, detail: str) -> ApiError:
    """The most specific ``ApiError`` for an error body."""
    cls: type[ApiError] = ApiError
    if status == 402:
        cls = PaymentRequired
    elif code.startswith("voucher_"):
        cls = VoucherRefused
    elif code in INPUT_CODES:
        cls = InvalidInput
    elif status == 404:
        cls = NotFound
    elif status == 503:
        cls = Unavailable
    return cls(status, code, detail)


class JobTimeout(ClientError):
    def __init__(self, job_id: str, status: str, timeout_s: float) -> None:
        super().__init__(
            f"job {job_id} is still {status} after {timeout_s:g} s; "
            "poll it later (it costs nothing if it fails or times out in the ledger)"
        )
        self.job_id, self.status, self.timeout_s = job_id, status, timeout_s


class JobFailed(ClientError):
    def __init__(self, job_id: str, failure: str | None, job: dict[str, Any]) -> None:
        super().__init__(f"job {job_id} failed ({failure or 'no consensus'}); nothing was charged")
        self.job_id, self.failure, self.job = job_id, failure, job


class ReceiptInvalid(ClientError):
    def __init__(self, job_id: str, detail: str) -> None:
        super().__init__(f"receipt of job {job_id} does not verify: {detail}")
        self.job_id, self.detail = job_id, detail


class AmountError(ClientError, ValueError):
    def __init__(self, text: str, detail: str) -> None:
        super().__init__(f"{text!r}: {detail}")
        self.text, self.detail = text, detail
