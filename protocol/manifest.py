"""Model manifests: what a model takes and returns, its price, and its file's sha256.

A model directory holds ``manifest.json``; models are addressed by the sha256 of their ONNX
file, and ``load_models`` refuses a manifest whose file does not hash to it. The file comes
from its ``source``:

- ``{"kind": "file"}``: the file named by ``file`` in the model directory (digits-cnn).
- ``{"kind": "build", "script", "module", "resource", "sha256", "package"}``: built from
  the ``resource`` file of the installed Python package ``module`` (which must hash to
  ``sha256``; ``package`` says what to pip install) by ``build(bytes) -> bytes`` of
  ``script`` in the model directory. The build lands in the model cache as
  ``<sha256>.onnx`` (``model_cache_dir``); the worker builds it at first use
  (``worker/model_files.py``), and a build that gives other bytes is refused.

Shapes: ``-1`` first is the batch dimension (the job's rows), an int a fixed size, and a
name a variable size bounded by ``dims`` (``{"tokens": {"min": 1, "max": 256}}``); every use
of one name in a job has the same size. An integer input may bound its values (``range``).
``input_kind`` is ``tensor`` (clients send tensors) or ``text`` (clients send text, which the
API turns into the inputs with the tokenizer of ``text``; see ``protocol/text.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.errors import ManifestError, TensorError
from protocol.tensors import DTYPES

INPUT_KINDS = ("tensor", "text")
TEXT_TENSORS = ("ids", "attention_mask", "type_ids")  # what a tokenizer gives, by name
MODEL_CACHE_ENV = "INFERLEDGER_MODEL_CACHE"

Dim = int | str


def model_cache_dir() -> Path:
    """Where built model files live: ``$INFERLEDGER_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/inferledger/models``, else ``~/.cache/inferledger/models``."""
    if explicit := os.environ.get(MODEL_CACHE_ENV):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferledger" / "models"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...]  # -1 first: the batch; ints: fixed; names: bounded by ``dims``
    value_range: tuple[int, int] | None = None  # inclusive bounds of every element

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.value_range is not None:
            out["range"] = list(self.value_range)
        return out


@dataclass(frozen=True)
class DimLimit:
    name: str
    min: int
    max: int


@dataclass(frozen=True)
class Source:
    kind: str  # "file" or "build"
    script: str = ""
    module: str = ""
    resource: str = ""
    sha256: str = ""
    package: str = ""


@dataclass(frozen=True)
class TextSpec:
    """Text in: the pinned tokenizer, the limits, and which input each tokenizer output
    fills (``ids``, ``attention_mask``, ``type_ids`` to input names)."""

    tokenizer: Path
    tokenizer_sha256: str
    max_chars: int
    max_tokens: int
    tensors: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    sha256: str
    path: Path  # the ONNX file: in the model directory, or in the model cache once built
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_rows: int
    price_per_row_wei: int
    tolerance_abs: float
    directory: Path = Path()
    source: Source = Source("file")
    batch_invariant: bool = False
    input_kind: str = "tensor"
    dims: tuple[DimLimit, ...] = ()
    text: TextSpec | None = None

    @property
    def model_hash(self) -> bytes:
        return bytes.fromhex(self.sha256)

    def validate_inputs(self, inputs: Mapping[str, npt.NDArray[Any]]) -> int:
        """Check names, dtypes, shapes, dims and value ranges; return the number of rows."""
        expected = {spec.name for spec in self.inputs}
        if set(inputs) != expected:
            raise TensorError(
                f"model {self.name} takes inputs {sorted(expected)}, got {sorted(inputs)}"
            )
        sizes: dict[str, int] = {}
        rows: set[int] = set()
        for spec in self.inputs:
            array = inputs[spec.name]
            _check_tensor(spec, array, sizes)
            rows.add(int(array.shape[0]))
        for limit in self.dims:
            size = sizes.get(limit.name)
            if size is not None and not limit.min <= size <= limit.max:
                raise TensorError(
                    f"dimension {limit.name} must be between {limit.min} and {limit.max}, "
                    f"got {size}"
                )
        (count,) = rows if len(rows) == 1 else (0,)
        if not 1 <= count <= self.max_batch_rows:
            raise TensorError(
                f"a job must have between 1 and {self.max_batch_rows} rows, got {count}"
            )
        return count

    def price_wei(self, rows: int) -> int:
        return rows * self.price_per_row_wei


def _check_tensor(spec: TensorSpec, array: npt.NDArray[Any], sizes: dict[str, int]) -> None:
    if str(array.dtype) != spec.dtype:
        raise TensorError(f"input {spec.name} must be {spec.dtype}, got {array.dtype}")
    if array.ndim != len(spec.shape) or any(
        isinstance(want, int) and want != -1 and want != got
        for want, got in zip(spec.shape, array.shape, strict=True)
    ):
        raise TensorError(
            f"input {spec.name} must have shape {list(spec.shape)}, got {list(array.shape)}"
        )
    for want, got in zip(spec.shape, array.shape, strict=True):
        if isinstance(want, str) and sizes.setdefault(want, int(got)) != got:
            raise TensorError(
                f"input {spec.name} has {want} = {got}, another input has {sizes[want]}"
            )
    if spec.value_range is not None and array.size:
        low, high = spec.value_range
        if int(np.min(array)) < low or int(np.max(array)) > high:
            raise TensorError(f"input {spec.name} must hold values in [{low}, {high}]")


# -- parsing ---------------------------------------------------------------------------


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be an integer")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return number


def _dim(value: Any, index: int, dims: Mapping[str, DimLimit], output: bool) -> Dim:
    if index == 0:
        if value != -1:
            raise ValueError("the first dimension must be -1, the batch")
        return -1
    if isinstance(value, str) and not output:
        if value not in dims:
            raise ValueError(f"dimension {value!r} is not declared in dims")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        kind = "a positive int" if output else "a positive int or a name declared in dims"
        raise ValueError(f"dimension {index} must be {kind}, got {value!r}")
    return value


def _spec(item: Any, dims: Mapping[str, DimLimit], output: bool) -> TensorSpec:
    name, dtype = str(item["name"]), str(item["dtype"])
    if dtype not in DTYPES:
        raise ValueError(f"{name}: unsupported dtype {dtype!r}")
    shape = tuple(_dim(d, i, dims, output) for i, d in enumerate(item["shape"]))
    if not shape:
        raise ValueError(f"{name}: a tensor needs the batch dimension")
    bounds = item.get("range")
    value_range = None
    if bounds is not None:
        if output or not np.issubdtype(np.dtype(DTYPES[dtype][0]), np.integer):
            raise ValueError(f"{name}: only integer inputs take a range")
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError(f"{name}: range must be [low, high]")
        low, high = (_int(b, f"{name} range", -(2**63)) for b in bounds)
        if low > high:
            raise ValueError(f"{name}: empty range [{low}, {high}]")
        value_range = (low, high)
    return TensorSpec(name, dtype, shape, value_range)


def _dims(data: Any) -> dict[str, DimLimit]:
    dims = {}
    for name, limit in dict(data).items():
        low = _int(limit["min"], f"dims.{name}.min", 1)
        dims[str(name)] = DimLimit(str(name), low, _int(limit["max"], f"dims.{name}.max", low))
    return dims


def _source(data: Any) -> Source:
    kind = str(data["kind"])
    if kind == "file":
        return Source("file")
    if kind != "build":
        raise ValueError(f"source kind must be file or build, got {kind!r}")
    return Source(
        "build",
        script=str(data["script"]),
        module=str(data["module"]),
        resource=str(data["resource"]),
        sha256=str(data["sha256"]).lower().removeprefix("0x"),
        package=str(data["package"]),
    )


def _text(data: Any, directory: Path, inputs: tuple[TensorSpec, ...], dims: Any) -> TextSpec:
    tensors = {str(k): str(v) for k, v in dict(data["tensors"]).items()}
    if "ids" not in tensors or not set(tensors) <= set(TEXT_TENSORS):
        raise ValueError(f"text.tensors must map ids (and optionally more of {TEXT_TENSORS})")
    if sorted(tensors.values()) != sorted(spec.name for spec in inputs):
        raise ValueError("text.tensors must name every input of the model once")
    shapes = {(spec.dtype, spec.shape) for spec in inputs}
    (dtype, shape), *others = shapes
    if others or dtype != "int64" or len(shape) != 2 or not isinstance(shape[1], str):
        raise ValueError("a text model's inputs must all be int64 [-1, <one named dim>]")
    return TextSpec(
        tokenizer=directory / str(data["tokenizer"]),
        tokenizer_sha256=str(data["tokenizer_sha256"]).lower().removeprefix("0x"),
        max_chars=_int(data["max_chars"], "text.max_chars", 1),
        max_tokens=dims[shape[1]].max,
        tensors=tuple(sorted(tensors.items())),
    )


def _parse(data: dict[str, Any], directory: Path, cache_dir: Path) -> Manifest:
    dims = _dims(data.get("dims", {}))
    inputs = tuple(_spec(i, dims, output=False) for i in data["inputs"])
    outputs = tuple(_spec(o, dims, output=True) for o in data["outputs"])
    used = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    if set(dims) != used:
        raise ValueError(f"dims {sorted(set(dims) - used)} are declared but not used")
    source = _source(data.get("source", {"kind": "file"}))
    sha256 = str(data["sha256"]).lower().removeprefix("0x")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 hex digits")
    if source.kind == "file":
        path = directory / str(data["file"])
    else:
        path = cache_dir / f"{sha256}.onnx"
    input_kind = str(data.get("input_kind", "tensor"))
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    if (input_kind == "text") != ("text" in data):
        raise ValueError("a text section goes with input_kind text, and only with it")
    tolerance = float(data["tolerance_abs"])
    if not 0 <= tolerance < float("inf"):
        raise ValueError("tolerance_abs must be a finite number >= 0")
    batch_invariant = data.get("batch_invariant", False)
    if not isinstance(batch_invariant, bool):
        raise ValueError("batch_invariant must be true or false")
    return Manifest(
        name=str(data["name"]),
        version=str(data["version"]),
        sha256=sha256,
        path=path,
        inputs=inputs,
        outputs=outputs,
        max_batch_rows=_int(data["max_batch_rows"], "max_batch_rows", 1),
        price_per_row_wei=_int(data["price_per_row_wei"], "price_per_row_wei", 0),
        tolerance_abs=tolerance,
        directory=directory,
        source=source,
        batch_invariant=batch_invariant,
        input_kind=input_kind,
        dims=tuple(dims.values()),
        text=_text(data["text"], directory, inputs, dims) if input_kind == "text" else None,
    )


def _verify(path: Path, sha256: str, what: str) -> None:
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sha256:
        raise ManifestError(f"{what} {path} has sha256 {actual}, the manifest says {sha256}")


def load_manifest(
    directory: Path, *, verify_file: bool = True, cache_dir: Path | None = None
) -> Manifest:
    """The manifest of ``directory``. ``verify_file`` checks the model file and the
    tokenizer against their sha256; a model built from a source is checked once it is in
    the cache (before that the worker builds it at first use and checks it then)."""
    path = directory / "manifest.json"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("a manifest is a JSON object")
        manifest = _parse(data, directory, cache_dir or model_cache_dir())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"bad manifest {path}: {exc}") from exc
    if verify_file:
        if manifest.source.kind == "file" or manifest.path.exists():
            _verify(manifest.path, manifest.sha256, "model file")
        if manifest.text is not None:
            _verify(manifest.text.tokenizer, manifest.text.tokenizer_sha256, "tokenizer")
    return manifest


def load_models(models_dir: Path, *, cache_dir: Path | None = None) -> dict[str, Manifest]:
    """Every model under ``models_dir``, keyed by its sha256 hex."""
    found: dict[str, Manifest] = {}
    for manifest_path in sorted(models_dir.glob("*/manifest.json")):
        manifest = load_manifest(manifest_path.parent, cache_dir=cache_dir)
        found[manifest.sha256] = manifest
    return found
