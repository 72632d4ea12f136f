"""Model manifests: what a model takes and returns, its price, and its file's sha256.

A model directory holds ``manifest.json`` and the ONNX file it names. ``load_models`` refuses
a manifest whose file does not hash to its declared sha256 (models are addressed by it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from protocol.errors import ManifestError, TensorError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 marks the batch dimension


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    sha256: str
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_rows: int
    price_per_row_wei: int
    tolerance_abs: float

    @property
    def model_hash(self) -> bytes:
        return bytes.fromhex(self.sha256)

    def validate_inputs(self, inputs: dict[str, npt.NDArray[Any]]) -> int:
        """Check names, dtypes and shapes against the manifest; return the number of rows."""
        expected = {spec.name for spec in self.inputs}
        if set(inputs) != expected:
            raise TensorError(
                f"model {self.name} takes inputs {sorted(expected)}, got {sorted(inputs)}"
            )
        rows: set[int] = set()
        for spec in self.inputs:
            array = inputs[spec.name]
            if str(array.dtype) != spec.dtype:
                raise TensorError(f"input {spec.name} must be {spec.dtype}, got {array.dtype}")
            if array.ndim != len(spec.shape) or any(
                want != -1 and want != got
                for want, got in zip(spec.shape, array.shape, strict=True)
            ):
                raise TensorError(
                    f"input {spec.name} must have shape {list(spec.shape)}, got {list(array.shape)}"
                )
            rows.add(int(array.shape[0]))
        (count,) = rows if len(rows) == 1 else (0,)
        if not 1 <= count <= self.max_batch_rows:
            raise TensorError(
                f"a job must have between 1 and {self.max_batch_rows} rows, got {count}"
            )
        return count

    def price_wei(self, rows: int) -> int:
        return rows * self.price_per_row_wei


def _specs(items: Any) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(str(i["name"]), str(i["dtype"]), tuple(int(d) for d in i["shape"]))
        for i in items
    )


def load_manifest(directory: Path, *, verify_file: bool = True) -> Manifest:
    path = directory / "manifest.json"
    try:
        data = json.loads(path.read_text())
        manifest = Manifest(
            name=str(data["name"]),
            version=str(data["version"]),
            sha256=str(data["sha256"]).lower().removeprefix("0x"),
            path=directory / str(data["file"]),
            inputs=_specs(data["inputs"]),
            outputs=_specs(data["outputs"]),
            max_batch_rows=int(data["max_batch_rows"]),
            price_per_row_wei=int(data["price_per_row_wei"]),
            tolerance_abs=float(data["tolerance_abs"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"bad manifest {path}: {exc}") from exc
    if verify_file:
        actual = hashlib.sha256(manifest.path.read_bytes()).hexdigest()
        if actual != manifest.sha256:
            raise ManifestError(
                f"{manifest.path} has sha256 {actual}, manifest says {manifest.sha256}"
            )
    return manifest


def load_models(models_dir: Path) -> dict[str, Manifest]:
    """Every model under ``models_dir``, keyed by its sha256 hex."""
    found: dict[str, Manifest] = {}
    for manifest_path in sorted(models_dir.glob("*/manifest.json")):
        manifest = load_manifest(manifest_path.parent)
        found[manifest.sha256] = manifest
    return found
