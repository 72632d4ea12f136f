"""Canonical hashes of models, inputs and results.

Every hash is sha256 over a domain tag and a canonical byte string; see
``docs/architecture.md`` ("Result hashing") for the byte layout, which this module defines.

- ``model_hash``: sha256 of the ONNX file's bytes (models are addressed by it).
- ``tensor_bytes``: name, dtype code, shape and raw little-endian bytes of one tensor.
- ``input_row_hash``: one row (batch index) of every input tensor, inputs sorted by name.
- ``input_hash``: commits to the ordered input row hashes of a job.
- ``row_hash``: model hash, input row hash and one row of every output, outputs sorted by name.
- ``result_hash``: commits to the ordered row hashes of a job (what attestations sign).

Hashing a row, not the whole batch, lets a later dispute reveal and compare single rows,
and the raw float32 logits are hashed (never rounded or saturated values).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.errors import TensorError
from protocol.tensors import DTYPES, dtype_code, dtype_name

TAG_INPUT_ROW = b"inferledger/input-row/v1"
TAG_INPUT = b"inferledger/input/v1"
TAG_ROW = b"inferledger/row/v1"
TAG_RESULT = b"inferledger/result/v1"

Tensors = Mapping[str, npt.NDArray[Any]]


def model_hash(onnx_bytes: bytes) -> bytes:
    """The model's address: sha256 of the ONNX file."""
    return hashlib.sha256(onnx_bytes).digest()


def tensor_bytes(name: str, array: npt.NDArray[Any]) -> bytes:
    """Canonical bytes of one named tensor: u16 name length, name, u8 dtype, u8 rank,
    u64 dims (all big-endian), then the raw little-endian element bytes in C order."""
    encoded = name.encode("utf-8")
    dtype = dtype_name(array)
    le = np.asarray(array, dtype=DTYPES[dtype][0])  # keeps rank 0 (ascontiguousarray makes it 1)
    header = struct.pack(">H", len(encoded)) + encoded
    header += struct.pack(">BB", dtype_code(dtype), le.ndim)
    header += b"".join(struct.pack(">Q", d) for d in le.shape)
    return header + le.tobytes(order="C")


def _rows(tensors: Tensors) -> int:
    counts = {t.shape[0] if t.ndim else -1 for t in tensors.values()}
    if len(counts) != 1 or -1 in counts:
        raise TensorError("every tensor must share the same leading batch dimension")
    return counts.pop()


def _row_parts(tensors: Tensors, row: int) -> bytes:
    return b"".join(tensor_bytes(name, tensors[name][row]) for name in sorted(tensors))


def input_row_hashes(inputs: Tensors) -> list[bytes]:
    return [
        hashlib.sha256(TAG_INPUT_ROW + _row_parts(inputs, i)).digest() for i in range(_rows(inputs))
    ]


def commit_rows(tag: bytes, row_hashes: Sequence[bytes]) -> bytes:
    """Commit to an ordered list of 32-byte row hashes."""
    return hashlib.sha256(tag + struct.pack(">I", len(row_hashes)) + b"".join(row_hashes)).digest()


def input_hash(inputs: Tensors) -> bytes:
    return commit_rows(TAG_INPUT, input_row_hashes(inputs))


def row_hashes(
    model: bytes, inputs: Tensors, outputs: Tensors, input_rows: Sequence[bytes] | None = None
) -> list[bytes]:
    """One hash per row over the model hash, that row's inputs and that row's outputs.
    ``input_rows``: ``input_row_hashes(inputs)``, when the caller has them already."""
    in_rows = input_row_hashes(inputs) if input_rows is None else list(input_rows)
    if _rows(outputs) != len(in_rows):
        raise TensorError("outputs and inputs have different numbers of rows")
    return [
        hashlib.sha256(TAG_ROW + model + in_rows[i] + _row_parts(outputs, i)).digest()
        for i in range(len(in_rows))
    ]


def result_hash(
    model: bytes, inputs: Tensors, outputs: Tensors, input_rows: Sequence[bytes] | None = None
) -> bytes:
    return commit_rows(TAG_RESULT, row_hashes(model, inputs, outputs, input_rows))
