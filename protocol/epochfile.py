"""The published epoch file: canonical JSON bytes and their keccak256 (posted on chain).

Canonical form: UTF-8 JSON, keys sorted, no insignificant whitespace, ASCII only; amounts
are decimal strings (JSON numbers cannot carry 256-bit integers safely). The file lists every
job of the epoch with its votes and signatures, the voucher redeemed per client, the leaves of
cumulative earnings and the totals; ``docs/architecture.md`` describes each field.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from protocol.keccak import keccak
from protocol.merkle import ResultLeaf

FORMAT = "inferledger-epoch/v1"


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """The canonical form is the standard library's ``json.dumps(document, sort_keys=True,
    separators=(",", ":"), ensure_ascii=True)``. orjson writes the same bytes five times as
    fast for what an epoch document holds (strings, integers, ``None``, lists, dicts with
    string keys); where the two could differ it is not used: orjson refuses an integer
    beyond 64 bits and a non-string key (``TypeError``), and a non-ASCII character comes out
    raw from orjson but escaped here, so any output that is not ASCII is written again the
    standard way. Floats are where they could differ silently (``1e+16`` against ``1e16``):
    an epoch document has none, and ``tests/protocol/test_epochfile.py`` holds the two
    writers equal over generated documents."""
    try:
        raw = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raw = None
    if raw is not None and raw.isascii():
        return raw
    return _standard_bytes(document)


def _standard_bytes(document: dict[str, Any]) -> bytes:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def file_hash(raw: bytes) -> bytes:
    return keccak(raw)


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
