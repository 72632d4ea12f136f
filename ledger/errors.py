"""Errors of the ledger; the API maps ``code`` and ``status`` to its JSON error body.

LedgerError
├── NotFound                    a job, epoch or proof that does not exist          (404)
├── Unauthorized                missing, expired or wrong credentials              (401)
├── InvalidRequest              malformed input: tensors, model, fields             (400)
│   └── VoucherInvalid          bad signature, expired, wrong client, too low       (400)
├── PaymentRequired             the deposit does not cover the price               (402)
├── Conflict                    an id reused with different content                (409)
│   └── TransferConflict        a transfer id reused with different fields
├── NoCapacity                  not enough eligible workers of distinct owners     (503)
├── Busy                        a request waited too long for its turn; retry it   (503)
├── RateLimited                 a key spent its request budget; ``retry_after_s``  (429)
├── InsufficientFunds           a transfer would make a non-system balance negative
├── InvariantViolation          a named invariant failed: stop, nothing is committed
├── ChainError                  a chain call failed; ``name`` is the Solidity error
└── EpochVetoed                 the guardian vetoed a posted epoch: settlement stops for review
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    code = "ledger_error"
    status = 500

    def __init__(self, detail: str, code: str | None = None, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data
        if code:
            self.code = code


class NotFound(LedgerError):
    code = "not_found"
    status = 404


class Unauthorized(LedgerError):
    code = "unauthorized"
    status = 401


class InvalidRequest(LedgerError):
    code = "invalid_request"
    status = 400


class VoucherInvalid(InvalidRequest):
    code = "voucher_invalid"


class RateLimited(LedgerError):
    """A key (worker or client address) sent requests faster than its limit allows."""

    code = "rate_limited"
    status = 429

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class PaymentRequired(LedgerError):
    code = "insufficient_deposit"
    status = 402


class Conflict(LedgerError):
    code = "conflict"
    status = 409


class TransferConflict(Conflict):
    code = "transfer_conflict"


class NoCapacity(LedgerError):
    code = "no_capacity"
    status = 503


class Busy(LedgerError):
    code = "busy"
    status = 503


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"
    status = 402


class InvariantViolation(LedgerError):
    code = "invariant_violation"
    status = 500


class ChainError(LedgerError):
    code = "chain_error"
    status = 502

    def __init__(self, detail: str, name: str = "", args: tuple[Any, ...] = ()) -> None:
        super().__init__(detail)
        self.name = name
        self.revert_args = args


class EpochVetoed(LedgerError):
    code = "epoch_vetoed"
    status = 409
