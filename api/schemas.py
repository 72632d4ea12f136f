"""Request and response bodies. Amounts in wei travel as decimal strings (JSON numbers
cannot carry 256-bit integers safely); hashes and signatures as 0x-hex."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Hex32 = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
Address = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
WeiStr = Field(pattern=r"^[0-9]{1,78}$")
Signature = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class ErrorPublic(BaseModel):
    """Every error answer (``api/errors.py``): a stable snake_case code and a detail."""

    error: str
    detail: str


# what any route may answer besides its success; 422: a body or parameter that fails validation
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorPublic, "description": what}
    for status, what in [
        (400, "Invalid request"),
        (401, "Unauthorized"),
        (402, "Insufficient deposit"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "Body too large"),
        (422, "Invalid body or parameter"),
        (429, "Rate limited (Retry-After)"),
        (503, "No capacity or busy; retry"),
    ]
}


class ChallengeRequest(BaseModel):
    address: str = Address


class ChallengePublic(BaseModel):
    nonce: str
    message: str
    expires_at: int


class TokenRequest(BaseModel):
    address: str = Address
    nonce: str = Field(min_length=1, max_length=64)
    signature: str = Signature


class TokenPublic(BaseModel):
    token: str
    expires_at: int
    role: str
    contributor: str


class VoucherIn(BaseModel):
    client: str = Address
    cumulative_amount_wei: str = WeiStr
    expiry: int = Field(ge=0, lt=2**63)


class JobCreate(BaseModel):
    """``inputs`` (named wire tensors) for a tensor model, ``texts`` (one row each) for a
    text model: ``GET /v1/models`` says which (``input_kind``)."""

    model: str = Hex32
    inputs: dict[str, Any] | None = None
    texts: list[str] | None = None
    voucher: VoucherIn
    signature: str = Signature


class Vote(BaseModel):
    worker: str
    contributor: str
    result_hash: str
    fingerprint: str
    fingerprint_info: dict[str, Any]
    signature: str


class JobPublic(BaseModel):
    job_id: str
    status: str
    client: str
    model_hash: str
    input_hash: str
    rows: int
    price_wei: str
    voucher_cumulative_wei: str
    result_hash: str | None
    fingerprint: str | None
    outputs: dict[str, Any] | None
    failure: str | None
    epoch: int | None
    attestations: list[Vote]


class ClientPublic(BaseModel):
    address: str
    deposited_wei: str
    available_wei: str
    held_wei: str
    charged_wei: str
    max_voucher_wei: str


class DevicePublic(BaseModel):
    address: str
    eligible: bool
    online: bool
    last_seen_s_ago: float | None
    in_flight: int
    safety_faults: int
    liveness_faults: int
    # replicated jobs in a row its vote agreed with another contributor's (adaptive
    # replication: at ``trust_after`` it may run jobs alone, under spot checks)
    agreed_streak: int


class ContributorEarningsPublic(BaseModel):
    contributor: str
    earned_wei: str
    posted_wei: str  # under the root of epoch ``posted_epoch``
    pending_wei: str  # not yet in a posted epoch
    posted_epoch: int


class TextInputPublic(BaseModel):
    """A text model's limits per text and its tokenizer (a Hugging Face tokenizer.json)."""

    max_chars: int
    max_tokens: int
    tokenizer_sha256: str


class ModelPublic(BaseModel):
    model_hash: str
    name: str
    version: str
    input_kind: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    dims: dict[str, dict[str, int]]
    text: TextInputPublic | None
    max_batch_rows: int
    price_per_row_wei: str
    tolerance_abs: float
    batch_invariant: bool


class ChainPublic(BaseModel):
    chain_id: int
    token: str
    vault: str
    registry: str
    settlement: str


class WorkResult(BaseModel):
    results: list[dict[str, Any]]


class EpochPublic(BaseModel):
    number: int
    status: str
    jobs: int
    root: str | None
    file_hash: str | None
    cumulative_payout_wei: str
    cumulative_fees_wei: str
    gas_used: int
    closed_at: int
    posted_at: int | None


class ProofPublic(BaseModel):
    epoch: int
    account: str
    cumulative_wei: str
    proof: list[str]
    root: str


class ResultProofPublic(BaseModel):
    """A leaf of the results tree (job, model, input, class, consensus) and its proof."""

    epoch: int
    job_id: str
    model_hash: str
    input_hash: str
    fingerprint: str
    result_hash: str
    proof: list[str]
    results_root: str


class JobInputsPublic(BaseModel):
    """A job's inputs as the workers received them (wire tensors; a text job's tokens), for
    an auditor to replay it. Trust nothing here: hashed, they must be the epoch file's
    ``input_hash``."""

    epoch: int
    job_id: str
    model_hash: str
    input_hash: str
    inputs: dict[str, Any]
