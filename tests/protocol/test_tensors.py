"""protocol.tensors: the wire form round-trips for every dtype, and decode refuses everything
an untrusted sender could get wrong, with TensorError (never another exception type)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol import tensors
from protocol.errors import TensorError

MAX = 1 << 16


def _wire(dtype: str = "float32", shape: Any = (2, 3), data: Any = None) -> dict[str, Any]:
    if data is None:
        count = int(np.prod(shape)) if isinstance(shape, list | tuple) else 1
        data = base64.b64encode(bytes(count * np.dtype(tensors.DTYPES[dtype][0]).itemsize))
        data = data.decode()
    shape = list(shape) if isinstance(shape, tuple) else shape
    return {"dtype": dtype, "shape": shape, "data": data}


def test_wire_format_by_hand() -> None:
    array = np.array([[1, 258]], dtype=np.int32)
    wire = tensors.encode(array)
    assert wire == {
        "dtype": "int32",
        "shape": [1, 2],
        "data": base64.b64encode(b"\x01\x00\x00\x00\x02\x01\x00\x00").decode(),
    }


@settings(max_examples=60, deadline=None)
@given(
    array=st.sampled_from(sorted(tensors.DTYPES)).flatmap(
        lambda name: hnp.arrays(
            np.dtype(tensors.DTYPES[name][0]),
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
            elements={"allow_nan": False, "allow_infinity": False}
            if name.startswith("float")
            else None,
        )
    )
)
def test_round_trip_every_dtype(array: np.ndarray) -> None:
    wire = tensors.encode(array)
    assert wire["shape"] == list(array.shape)
    back = tensors.decode(wire, max_bytes=MAX)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit for bit, -0.0 included


@pytest.mark.parametrize("name", sorted(tensors.DTYPES))
def test_round_trip_each_dtype_named(name: str) -> None:
    np_dtype = np.dtype(tensors.DTYPES[name][0])
    array = np.arange(24).reshape(2, 3, 4).astype(np_dtype)
    assert tensors.encode(array)["dtype"] == name
    back = tensors.decode(tensors.encode(array), max_bytes=MAX)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == np_dtype
    scalar = tensors.decode(tensors.encode(array[1, 2, 3]), max_bytes=MAX)
    assert scalar.shape == () and scalar == array[1, 2, 3]
    # a non-contiguous view encodes its values in C order
    view = array[:, ::2, ::-1]
    np.testing.assert_array_equal(tensors.decode(tensors.encode(view), max_bytes=MAX), view)


def test_round_trip_extremes() -> None:
    for array in (
        np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny, -0.0], np.float32),
        np.array([np.finfo(np.float64).smallest_subnormal, -np.finfo(np.float64).max]),
        np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], np.int64),
        np.array([0, 255], np.uint8),
    ):
        back = tensors.decode(tensors.encode(array), max_bytes=MAX)
        assert back.tobytes() == array.tobytes()


@pytest.mark.parametrize("data", ["AA=A", "AAA", "AA A", "AAAA\n", "!!!!", "ÀÀÀÀ", "AAA-"])
def test_bad_base64_is_refused(data: str) -> None:
    assert tensors.decode(_wire("uint8", (3,), "AAAA"), max_bytes=MAX).tolist() == [0, 0, 0]
    with pytest.raises(TensorError, match="base64"):
        tensors.decode(_wire("uint8", (3,), data), max_bytes=MAX)


@pytest.mark.parametrize("count", [0, 23, 25, 48])
def test_wrong_byte_count_is_refused(count: int) -> None:
    data = base64.b64encode(bytes(count)).decode()
    with pytest.raises(TensorError, match="bytes"):
        tensors.decode(_wire("float32", (2, 3), data), max_bytes=MAX)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_refused(dtype: str, value: float) -> None:
    array = np.zeros((2, 2), dtype=tensors.DTYPES[dtype][0])
    array[1, 0] = value
    with pytest.raises(TensorError, match="NaN or infinity"):
        tensors.decode(tensors.encode(array), max_bytes=MAX)


def test_nan_payloads_are_refused() -> None:
    quiet_with_payload = np.array([0x7FC00001, 0xFFFFFFFF], dtype="<u4").view("<f4")
    data = base64.b64encode(quiet_with_payload.tobytes()).decode()
    wire = {"dtype": "float32", "shape": [2], "data": data}
    with pytest.raises(TensorError):
        tensors.decode(wire, max_bytes=MAX)


@pytest.mark.parametrize(
    "dtype", ["float16", "bool", "int8", "uint16", "<f4", "complex64", "Float32", "", 1, None]
)
def test_unsupported_dtype_is_refused(dtype: Any) -> None:
    wire = {"dtype": dtype, "shape": [1], "data": "AAAAAA=="}
    with pytest.raises(TensorError):
        tensors.decode(wire, max_bytes=MAX)


def test_unsupported_dtype_is_refused_on_encode() -> None:
    for array in (np.zeros(2, np.float16), np.zeros(2, bool), np.zeros(2, ">f4")):
        with pytest.raises(TensorError):
            tensors.encode(array)


@pytest.mark.parametrize(
    "shape",
    [[-1], [2, -3], [True], [1, False], [1.0], ["2"], [None], [[2]], "23", (2, 3), None, 6],
)
def test_bad_shapes_are_refused(shape: Any) -> None:
    wire = {"dtype": "uint8", "shape": shape, "data": "AAAAAAAA"}
    with pytest.raises(TensorError, match="shape"):
        tensors.decode(wire, max_bytes=MAX)


def test_rank_above_eight_is_refused() -> None:
    assert tensors.MAX_RANK == 8
    ok = tensors.decode(_wire("uint8", [1] * 8), max_bytes=MAX)
    assert ok.ndim == 8
    with pytest.raises(TensorError, match="at most 8"):
        tensors.decode(_wire("uint8", [1] * 9), max_bytes=MAX)


def test_size_limit_is_checked_before_decoding() -> None:
    """A declared size over the limit is refused before the data is even looked at, so a
    large or malformed payload costs nothing: here the data is not base64 at all."""
    with pytest.raises(TensorError, match="exceeds the limit"):
        tensors.decode(_wire("float32", [1025], "!" * 10), max_bytes=4096)
    # exactly at the limit is fine
    at_limit = tensors.decode(_wire("float32", [1024]), max_bytes=4096)
    assert at_limit.nbytes == 4096
    # data longer than any valid encoding within the limit is refused before decoding too
    with pytest.raises(TensorError, match="exceeds the limit"):
        tensors.decode(_wire("uint8", [4], "!" * 100_000), max_bytes=64)


@pytest.mark.parametrize(
    "shape",
    [[2**32, 2**32], [2**64], [2**62, 4], [0, 2**64], [0, 2**63], [2**40] * 8],
)
def test_huge_shapes_are_refused_with_tensor_error(shape: list[int]) -> None:
    """Element counts beyond int64 must neither wrap around nor escape as ValueError."""
    with pytest.raises(TensorError):
        tensors.decode(_wire("uint8", shape, ""), max_bytes=MAX)


def test_not_an_object_is_refused() -> None:
    for obj in (None, [], "AAAA", 3, {"dtype": "uint8", "shape": [1]}):
        with pytest.raises(TensorError):
            tensors.decode(obj, max_bytes=MAX)
    with pytest.raises(TensorError, match="base64 string"):
        tensors.decode({"dtype": "uint8", "shape": [1], "data": b"AA=="}, max_bytes=MAX)
