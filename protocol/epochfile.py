"""The published epoch file: canonical JSON bytes and their keccak256 (posted on chain).

Canonical form: UTF-8 JSON, keys sorted, no insignificant whitespace, ASCII only; amounts
are decimal strings (JSON numbers cannot carry 256-bit integers safely). The file lists every
job of the epoch with its votes and signatures, the voucher redeemed per client, the leaves of
cumulative earnings and the totals; ``docs/architecture.md`` describes each field.
"""

from __future__ import annotations

import json
from typing import Any

from eth_utils import keccak

from protocol.merkle import ResultLeaf

FORMAT = "inferledger-epoch/v1"


def canonical_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def file_hash(raw: bytes) -> bytes:
    return bytes(keccak(raw))


def parse(raw: bytes) -> dict[str, Any]:
    document = json.loads(raw)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not an epoch file of format {FORMAT}")
    return document


def result_leaves(document: dict[str, Any]) -> list[ResultLeaf]:
    """The results tree's leaves: the consensus of every accepted job."""
    return [
        ResultLeaf(
            *(
                bytes.fromhex(job[k][2:])
                for k in ("job_id", "model_hash", "input_hash", "fingerprint", "result_hash")
            )
        )
        for job in document["jobs"]
        if job["status"] == "accepted"
    ]
