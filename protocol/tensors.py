"""Tensors on the wire: ``{"dtype": "float32", "shape": [..], "data": base64(LE raw bytes)}``.

Decoding checks everything an untrusted sender could get wrong: dtype name, shape (non-negative
ints, bounded rank), byte length against the shape, and an overall size limit.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.errors import TensorError

# dtype name -> (numpy little-endian dtype, one-byte code used inside hashes)
DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("<f4", 1),
    "float64": ("<f8", 2),
    "int64": ("<i8", 3),
    "int32": ("<i4", 4),
    "uint8": ("|u1", 5),
}
MAX_RANK = 8


def dtype_code(name: str) -> int:
    try:
        return DTYPES[name][1]
    except KeyError:
        raise TensorError(f"unsupported dtype {name!r}; supported: {sorted(DTYPES)}") from None


def dtype_name(array: npt.NDArray[Any]) -> str:
    for name, (np_dtype, _) in DTYPES.items():
        if array.dtype == np.dtype(np_dtype):
            return name
    raise TensorError(f"unsupported dtype {array.dtype}")


def encode(array: npt.NDArray[Any]) -> dict[str, Any]:
    """Encode an array as its wire form (little-endian, C order)."""
    name = dtype_name(array)
    le = np.asarray(array, dtype=DTYPES[name][0])  # keeps rank 0 (ascontiguousarray makes it 1)
    return {
        "dtype": name,
        "shape": list(le.shape),
        "data": base64.b64encode(le.tobytes(order="C")).decode("ascii"),
    }


def decode(obj: Any, *, max_bytes: int) -> npt.NDArray[Any]:
    """Decode a wire tensor, refusing anything malformed or larger than ``max_bytes``."""
    if not isinstance(obj, dict):
        raise TensorError("a tensor must be an object with dtype, shape and data")
    name, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if not isinstance(name, str):
        raise TensorError("tensor dtype must be a string")
    np_dtype = np.dtype(DTYPES[name][0]) if name in DTYPES else None
    if np_dtype is None:
        raise TensorError(f"unsupported dtype {name!r}; supported: {sorted(DTYPES)}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise TensorError(f"tensor shape must be a list of at most {MAX_RANK} non-negative ints")
    if not isinstance(data, str):
        raise TensorError("tensor data must be a base64 string")
    expected = math.prod(shape) * np_dtype.itemsize  # Python ints: a huge shape cannot wrap
    if expected > max_bytes or len(data) > (max_bytes * 4) // 3 + 4:
        raise TensorError(f"tensor of {expected} bytes exceeds the limit of {max_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TensorError("tensor data is not valid base64") from exc
    if len(raw) != expected:
        raise TensorError(f"tensor data has {len(raw)} bytes; shape {shape} needs {expected}")
    try:
        array = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    except ValueError as exc:  # e.g. an empty tensor with a dimension numpy cannot index
        raise TensorError(f"tensor shape {shape} is not representable") from exc
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise TensorError("tensor contains NaN or infinity")
    return array
