"""Receipts: what a client holds for each result, checked by the library itself.

A receipt carries the decided job (its result and outputs), the signed attestations behind
it, and, once the job's epoch is posted, the Merkle proof that the job's consensus leaf
``(job id, model, input, fingerprint class, result hash)`` is under the epoch's results root.
Each attestation's signature must recover to the worker it names, and the proof is checked
against a leaf built from the job as the client saw it, not from the proof's own fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from inferledger.errors import ReceiptInvalid
from protocol import merkle, tensors
from protocol.eip712 import Attestation, Domain, recover_attestation
from protocol.errors import ProtocolError

MAX_OUTPUT_BYTES = 64 << 20  # a decoded output tensor the library accepts from the API


def _b32(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError("not 32 bytes")
    return raw


@dataclass(frozen=True)
class Receipt:
    job: dict[str, Any]
    proof: dict[str, Any] | None = None  # ResultProofPublic, verified; None until posted

    @property
    def job_id(self) -> str:
        return str(self.job["job_id"])

    @property
    def status(self) -> str:
        return str(self.job["status"])

    @property
    def price_wei(self) -> int:
        return int(self.job["price_wei"])

    @property
    def attestations(self) -> list[dict[str, Any]]:
        return list(self.job["attestations"])

    @property
    def epoch(self) -> int | None:
        return None if self.job["epoch"] is None else int(self.job["epoch"])

    def outputs(self) -> dict[str, npt.NDArray[Any]]:
        raw = self.job.get("outputs") or {}
        return {k: tensors.decode(v, max_bytes=MAX_OUTPUT_BYTES) for k, v in raw.items()}


def verify_attestations(job: dict[str, Any], domain: Domain) -> None:
    """Every vote is signed by the worker it names, and the consensus result of an accepted
    job is attested by at least one of them."""
    job_id = str(job["job_id"])
    try:
        fields = _b32(job["job_id"]), _b32(job["model_hash"]), _b32(job["input_hash"])
        for vote in job["attestations"]:
            att = Attestation(*fields, _b32(vote["result_hash"]), _b32(vote["fingerprint"]))
            signer = recover_attestation(domain, att, bytes.fromhex(vote["signature"][2:]))
            if signer.lower() != str(vote["worker"]).lower():
                raise ReceiptInvalid(job_id, f"a vote names {vote['worker']}, signed by {signer}")
    except (ValueError, KeyError, TypeError, ProtocolError) as exc:
        raise ReceiptInvalid(job_id, f"malformed attestation: {exc}") from None
    if job["status"] == "accepted" and not any(
        v["result_hash"] == job["result_hash"] and v["fingerprint"] == job["fingerprint"]
        for v in job["attestations"]
    ):
        raise ReceiptInvalid(job_id, "no attestation signs the consensus result")


def verify_result_proof(job: dict[str, Any], proof: dict[str, Any]) -> None:
    """The proof leads from the job's own consensus leaf to the results root it names."""
    job_id = str(job["job_id"])
    try:
        leaf = merkle.ResultLeaf(
            *(
                _b32(job[k])
                for k in ("job_id", "model_hash", "input_hash", "fingerprint", "result_hash")
            )
        )
        steps = [_b32(p) for p in proof["proof"]]
        root = _b32(proof["results_root"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReceiptInvalid(job_id, f"malformed proof: {exc}") from None
    if int(proof["epoch"]) != job["epoch"]:
        raise ReceiptInvalid(job_id, f"proof of epoch {proof['epoch']}, job in {job['epoch']}")
    if not merkle.verify_leaf(root, leaf.hash(), steps):
        raise ReceiptInvalid(job_id, f"the proof does not lead to root {proof['results_root']}")
