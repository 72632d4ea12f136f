"""protocol.hashing: the documented byte layout recomputed by hand, and the properties the
dispute process relies on (one ulp changes the result hash, row order matters, names sorted)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from protocol import hashing
from protocol.errors import TensorError

MODEL = hashlib.sha256(b"a model file").digest()


def _sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def test_tags_are_the_documented_strings() -> None:
    assert hashing.TAG_INPUT_ROW == b"inferledger/input-row/v1"
    assert hashing.TAG_INPUT == b"inferledger/input/v1"
    assert hashing.TAG_ROW == b"inferledger/row/v1"
    assert hashing.TAG_RESULT == b"inferledger/result/v1"


def test_model_hash_is_sha256_of_the_file() -> None:
    assert hashing.model_hash(b"onnx bytes") == hashlib.sha256(b"onnx bytes").digest()


def test_tensor_bytes_layout_by_hand() -> None:
    """u16 name length, name, u8 dtype code, u8 rank, u64 dims (big-endian), raw LE bytes."""
    array = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -0.0]], dtype=np.float32)
    expected = (
        b"\x00\x04"
        + b"in_x"  # u16 BE name length, UTF-8 name
        + b"\x01"  # float32
        + b"\x02"  # rank 2
        + b"\x00\x00\x00\x00\x00\x00\x00\x02"  # dim 0 = 2, u64 BE
        + b"\x00\x00\x00\x00\x00\x00\x00\x03"  # dim 1 = 3
        + b"\x00\x00\x80\x3f"
        + b"\x00\x00\x00\xc0"
        + b"\x00\x00\x00\x3f"  # 1.0, -2.0, 0.5 LE
        + b"\x00\x00\x40\x40"
        + b"\x00\x00\x00\x00"
        + b"\x00\x00\x00\x80"  # 3.0, 0.0, -0.0
    )
    assert hashing.tensor_bytes("in_x", array) == expected


def test_tensor_bytes_of_int64_and_utf8_name() -> None:
    array = np.array([1, -1], dtype=np.int64)
    name = "é"  # two UTF-8 bytes: the length counts bytes, not characters
    expected = (
        b"\x00\x02"
        + "é".encode()
        + b"\x03"
        + b"\x01"
        + b"\x00" * 7
        + b"\x02"
        + b"\x01"
        + b"\x00" * 7
        + b"\xff" * 8
    )
    assert hashing.tensor_bytes(name, array) == expected


def test_tensor_bytes_of_a_scalar_row_has_rank_zero() -> None:
    """A row of a 1-D tensor is a scalar: rank 0 and no dims (not rank 1, dims [1])."""
    row = np.array([2.5, 7.0], dtype=np.float64)[0]
    # name "y", float64 (code 2), rank 0, no dims, then 2.5 as little-endian float64
    expected = b"\x00\x01" + b"y" + b"\x02" + b"\x00" + b"\x00\x00\x00\x00\x00\x00\x04\x40"
    assert hashing.tensor_bytes("y", row) == expected
    assert hashing.tensor_bytes("y", np.array(2.5)) == expected


def test_tensor_bytes_independent_of_memory_layout() -> None:
    base = np.arange(12, dtype=np.int32).reshape(3, 4)
    fortran = np.asfortranarray(base)
    transposed_back = base.T.copy().T  # non C-contiguous view of the same values
    big_endian_copy = base.astype(">i4")
    assert hashing.tensor_bytes("t", fortran) == hashing.tensor_bytes("t", base)
    assert hashing.tensor_bytes("t", transposed_back) == hashing.tensor_bytes("t", base)
    assert hashing.tensor_bytes("t", base[:, ::2]) == hashing.tensor_bytes("t", base[:, [0, 2]])
    with pytest.raises(TensorError):  # only the little-endian dtypes are canonical
        hashing.tensor_bytes("t", big_endian_copy)


def test_input_result_hashes_by_hand() -> None:
    """Two inputs given out of name order, two rows, one output; every hash recomputed."""
    inputs = {
        "b": np.array([[1, 2], [3, 4]], dtype=np.int64),
        "a": np.array([[0.25], [-1.0]], dtype=np.float32),
    }
    outputs = {"logits": np.array([[1.5, -1.5, 0.0], [2.0, 4.0, 8.0]], dtype=np.float32)}

    def tb(name: bytes, code: int, dims: list[int], raw: bytes) -> bytes:
        header = len(name).to_bytes(2, "big") + name + bytes([code, len(dims)])
        return header + b"".join(d.to_bytes(8, "big") for d in dims) + raw

    def le_f32(*xs: float) -> bytes:
        return b"".join(np.float32(x).astype("<f4").tobytes() for x in xs)

    def le_i64(*xs: int) -> bytes:
        return b"".join(x.to_bytes(8, "little", signed=True) for x in xs)

    in_rows = [
        _sha(
            b"inferledger/input-row/v1",
            tb(b"a", 1, [1], le_f32(0.25)),
            tb(b"b", 3, [2], le_i64(1, 2)),
        ),
        _sha(
            b"inferledger/input-row/v1",
            tb(b"a", 1, [1], le_f32(-1.0)),
            tb(b"b", 3, [2], le_i64(3, 4)),
        ),
    ]
    assert hashing.input_row_hashes(inputs) == in_rows
    input_hash = _sha(b"inferledger/input/v1", b"\x00\x00\x00\x02", *in_rows)
    assert hashing.input_hash(inputs) == input_hash

    rows = [
        _sha(b"inferledger/row/v1", MODEL, in_rows[0], tb(b"logits", 1, [3], le_f32(1.5, -1.5, 0))),
        _sha(b"inferledger/row/v1", MODEL, in_rows[1], tb(b"logits", 1, [3], le_f32(2, 4, 8))),
    ]
    assert hashing.row_hashes(MODEL, inputs, outputs) == rows
    result = _sha(b"inferledger/result/v1", b"\x00\x00\x00\x02", *rows)
    assert hashing.result_hash(MODEL, inputs, outputs) == result
    assert hashing.commit_rows(hashing.TAG_RESULT, rows) == result
    # the input row hashes a caller already has (the worker's, from checking the input hash)
    assert hashing.result_hash(MODEL, inputs, outputs, in_rows) == result
    assert hashing.result_hash(MODEL, inputs, outputs, in_rows[::-1]) != result


def _job(rows: int = 4) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    inputs = {"input": rng.normal(size=(rows, 1, 8, 8)).astype(np.float32)}
    outputs = {"logits": rng.normal(size=(rows, 10)).astype(np.float32)}
    return inputs, outputs


@pytest.mark.parametrize("direction", [np.inf, -np.inf])
def test_one_ulp_in_one_output_changes_the_result_hash(direction: float) -> None:
    inputs, outputs = _job()
    before = hashing.result_hash(MODEL, inputs, outputs)
    rows_before = hashing.row_hashes(MODEL, inputs, outputs)
    changed = outputs["logits"].copy()
    changed[2, 7] = np.nextafter(changed[2, 7], np.float32(direction), dtype=np.float32)
    assert changed[2, 7] != outputs["logits"][2, 7]
    after = hashing.result_hash(MODEL, inputs, {"logits": changed})
    assert after != before
    rows_after = hashing.row_hashes(MODEL, inputs, {"logits": changed})
    # only the changed row's hash moves, so a dispute can point at that row
    assert [a != b for a, b in zip(rows_before, rows_after, strict=True)] == [
        False,
        False,
        True,
        False,
    ]


def test_negative_zero_is_not_zero() -> None:
    inputs, outputs = _job(1)
    zero = {"logits": np.zeros((1, 10), dtype=np.float32)}
    negative = {"logits": -np.zeros((1, 10), dtype=np.float32)}
    assert hashing.result_hash(MODEL, inputs, zero) != hashing.result_hash(MODEL, inputs, negative)


def test_row_order_matters() -> None:
    inputs, outputs = _job()
    order = [1, 0, 2, 3]
    swapped_in = {k: v[order] for k, v in inputs.items()}
    swapped_out = {k: v[order] for k, v in outputs.items()}
    assert hashing.input_hash(swapped_in) != hashing.input_hash(inputs)
    assert hashing.result_hash(MODEL, swapped_in, swapped_out) != hashing.result_hash(
        MODEL, inputs, outputs
    )
    # the row hashes themselves are per row: swapping rows swaps them
    rows = hashing.row_hashes(MODEL, inputs, outputs)
    assert hashing.row_hashes(MODEL, swapped_in, swapped_out) == [rows[i] for i in order]


def test_model_hash_is_bound() -> None:
    inputs, outputs = _job()
    other = hashlib.sha256(b"another model").digest()
    assert hashing.result_hash(other, inputs, outputs) != hashing.result_hash(
        MODEL, inputs, outputs
    )


def test_names_are_sorted_and_bound() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.arange(6, 12, dtype=np.float32).reshape(2, 3)
    assert hashing.input_hash({"x": x, "y": y}) == hashing.input_hash({"y": y, "x": x})
    assert hashing.input_hash({"x": x, "y": y}) != hashing.input_hash({"x": y, "y": x})
    assert hashing.input_hash({"x": x}) != hashing.input_hash({"z": x})
    # sorted by name (code points), not insertion order: "B" < "a"
    parts = hashing.tensor_bytes("B", y[0]) + hashing.tensor_bytes("a", x[0])
    row0 = hashlib.sha256(hashing.TAG_INPUT_ROW + parts).digest()
    assert hashing.input_row_hashes({"a": x, "B": y})[0] == row0


def test_dtype_is_bound() -> None:
    ints = {"x": np.arange(4, dtype=np.int32).reshape(2, 2)}
    floats = {"x": np.arange(4, dtype=np.int32).reshape(2, 2).view(np.float32)}
    assert ints["x"].tobytes() == floats["x"].tobytes()
    assert hashing.input_hash(ints) != hashing.input_hash(floats)


def test_mismatched_batches_are_refused() -> None:
    inputs, outputs = _job(4)
    with pytest.raises(TensorError):
        hashing.input_hash({"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 3), np.float32)})
    with pytest.raises(TensorError):
        hashing.input_hash({"a": np.array(1.0, dtype=np.float32)})
    with pytest.raises(TensorError):
        hashing.result_hash(MODEL, inputs, {"logits": outputs["logits"][:3]})


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(TensorError):
        hashing.input_hash({"x": np.zeros((2, 2), dtype=np.float16)})
    with pytest.raises(TensorError):
        hashing.input_hash({"x": np.zeros((2, 2), dtype=bool)})
