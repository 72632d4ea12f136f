"""Checking one assignment from ``GET /v1/work`` before any work is done on it.

Everything in an assignment is untrusted: ids must be 0x-prefixed 32-byte hex, inputs must
decode under the size limit, and the decoded inputs must hash to the assignment's
``input_hash``; anything else raises an ``AssignmentError`` and the job is skipped unsigned.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from protocol.errors import TensorError
from protocol.hashing import TAG_INPUT, commit_rows, input_row_hashes
from protocol.tensors import decode
from worker.errors import InputHashMismatch, MalformedAssignment

logger = logging.getLogger(__name__)

HASH32 = re.compile(r"0x[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Job:
    job_id: bytes
    model_hash: bytes
    input_hash: bytes
    inputs: dict[str, npt.NDArray[Any]]
    deadline: int
    input_rows: tuple[bytes, ...] = ()  # the inputs' row hashes (protocol.hashing)

    @property
    def job_id_hex(self) -> str:
        return "0x" + self.job_id.hex()

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def _hash32(raw: dict[str, Any], name: str, job_id: str | None) -> bytes:
    value = raw.get(name)
    if not isinstance(value, str) or not HASH32.fullmatch(value):
        raise MalformedAssignment(job_id, f"{name} must be 0x followed by 64 hex digits")
    return bytes.fromhex(value[2:])


def _inputs(
    raw: dict[str, Any], job_id: str, max_tensor_bytes: int, max_inputs: int
) -> dict[str, npt.NDArray[Any]]:
    wire = raw.get("inputs")
    if not isinstance(wire, dict) or not wire:
        raise MalformedAssignment(job_id, "inputs must be a non-empty object")
    if len(wire) > max_inputs:
        raise MalformedAssignment(job_id, f"{len(wire)} inputs; at most {max_inputs} are taken")
    inputs = {}
    for name, tensor in wire.items():
        try:
            inputs[str(name)] = decode(tensor, max_bytes=max_tensor_bytes)
        except TensorError as exc:
            raise MalformedAssignment(job_id, f"input {name!r}: {exc.detail}") from exc
        if inputs[str(name)].ndim == 0:
            raise MalformedAssignment(job_id, f"input {name!r} has no batch dimension")
    return inputs


def parse_assignment(raw: Any, *, max_tensor_bytes: int, max_inputs: int) -> Job:
    """A checked ``Job`` whose inputs hash to its ``input_hash``, or an ``AssignmentError``."""
    if not isinstance(raw, dict):
        raise MalformedAssignment(None, "an assignment must be an object")
    job_id = _hash32(raw, "job_id", None)
    job_hex = "0x" + job_id.hex()
    model_hash = _hash32(raw, "model_hash", job_hex)
    claimed = _hash32(raw, "input_hash", job_hex)
    deadline = raw.get("deadline")
    if not isinstance(deadline, int) or isinstance(deadline, bool):
        raise MalformedAssignment(job_hex, "deadline must be an integer unix time")
    inputs = _inputs(raw, job_hex, max_tensor_bytes, max_inputs)
    try:
        rows = tuple(input_row_hashes(inputs))
    except TensorError as exc:
        raise MalformedAssignment(job_hex, exc.detail) from exc
    actual = commit_rows(TAG_INPUT, rows)
    if actual != claimed:
        raise InputHashMismatch(job_hex, claimed, actual)
    return Job(job_id, model_hash, claimed, inputs, deadline, rows)
