"""protocol.manifest on the real models/ directory, a tampered copy of it, and input
validation against the digits-cnn manifest (the schema's other parts:
test_manifest_schema.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import ManifestError, TensorError
from protocol.manifest import Manifest, load_manifest, load_models

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def digits() -> Manifest:
    (manifest,) = [m for m in load_models(MODELS).values() if m.name == "digits-cnn"]
    return manifest


def test_load_models_reads_the_real_directory(tmp_path: Path) -> None:
    models = load_models(MODELS, cache_dir=tmp_path)
    assert sorted(m.name for m in models.values()) == ["digits-cnn", "minilm-l6"]
    for sha, manifest in models.items():
        assert sha == manifest.sha256 and manifest.model_hash == bytes.fromhex(sha)
        assert manifest.inputs and manifest.outputs and manifest.directory.parent == MODELS
        assert manifest.max_batch_rows >= 1 and manifest.price_per_row_wei > 0
        if manifest.source.kind == "file":
            assert hashlib.sha256(manifest.path.read_bytes()).hexdigest() == sha
        else:  # built at first use into the cache, under its own hash
            assert manifest.path == tmp_path / f"{sha}.onnx" and not manifest.path.exists()


def test_digits_manifest_fields(digits: Manifest) -> None:
    raw = json.loads((MODELS / "digits-cnn" / "manifest.json").read_text())
    assert digits.version == raw["version"]
    assert digits.price_per_row_wei == int(raw["price_per_row_wei"])
    assert [(s.name, s.dtype, s.shape) for s in digits.inputs] == [
        ("input", "float32", (-1, 1, 8, 8))
    ]
    assert [(s.name, s.dtype, s.shape) for s in digits.outputs] == [("logits", "float32", (-1, 10))]
    assert digits.price_wei(3) == 3 * digits.price_per_row_wei
    assert digits.input_kind == "tensor" and digits.text is None and digits.dims == ()
    assert digits.source.kind == "file" and digits.batch_invariant is raw["batch_invariant"]


def _copy_models(tmp_path: Path) -> Path:
    target = tmp_path / "models"
    target.mkdir()
    shutil.copytree(MODELS / "digits-cnn", target / "digits-cnn")
    return target


def test_a_changed_model_file_is_refused(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    assert load_models(models)  # the untouched copy loads
    onnx = models / "digits-cnn" / "model.onnx"
    raw = bytearray(onnx.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    onnx.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match="sha256"):
        load_models(models)
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(models / "digits-cnn")
    # verify_file=False is the explicit opt-out, and it reads the manifest as written
    assert load_manifest(models / "digits-cnn", verify_file=False).name == "digits-cnn"


def test_a_manifest_naming_another_hash_is_refused(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    path = models / "digits-cnn" / "manifest.json"
    data = json.loads(path.read_text())
    data["sha256"] = "00" + data["sha256"][2:]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError):
        load_models(models)


@pytest.mark.parametrize("drop", ["name", "sha256", "inputs", "max_batch_rows", "file"])
def test_a_malformed_manifest_is_refused(tmp_path: Path, drop: str) -> None:
    models = _copy_models(tmp_path)
    path = models / "digits-cnn" / "manifest.json"
    data = json.loads(path.read_text())
    del data[drop]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError):
        load_manifest(models / "digits-cnn")


def test_a_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    (models / "digits-cnn" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError):
        load_models(models)


def _batch(rows: int) -> np.ndarray:
    return np.zeros((rows, 1, 8, 8), dtype=np.float32)


def test_validate_inputs_accepts_a_good_batch(digits: Manifest) -> None:
    assert digits.validate_inputs({"input": _batch(1)}) == 1
    assert digits.validate_inputs({"input": _batch(digits.max_batch_rows)}) == digits.max_batch_rows


@pytest.mark.parametrize(
    "inputs",
    [
        {"images": _batch(2)},
        {},
        {"input": _batch(2), "extra": _batch(2)},
        {"Input": _batch(2)},
    ],
    ids=["wrong-name", "none", "extra", "case"],
)
def test_validate_inputs_refuses_wrong_names(
    digits: Manifest, inputs: dict[str, np.ndarray]
) -> None:
    with pytest.raises(TensorError, match="takes inputs"):
        digits.validate_inputs(inputs)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.uint8, ">f4"])
def test_validate_inputs_refuses_wrong_dtype(digits: Manifest, dtype: object) -> None:
    with pytest.raises(TensorError, match="must be float32"):
        digits.validate_inputs({"input": _batch(2).astype(dtype)})


@pytest.mark.parametrize(
    "shape", [(2, 1, 8, 9), (2, 8, 8), (2, 3, 8, 8), (2, 1, 8, 8, 1), (64,), ()]
)
def test_validate_inputs_refuses_wrong_shape(digits: Manifest, shape: tuple[int, ...]) -> None:
    with pytest.raises(TensorError, match="shape"):
        digits.validate_inputs({"input": np.zeros(shape, dtype=np.float32)})


def test_validate_inputs_refuses_too_many_or_no_rows(digits: Manifest) -> None:
    with pytest.raises(TensorError, match="rows"):
        digits.validate_inputs({"input": _batch(digits.max_batch_rows + 1)})
    with pytest.raises(TensorError, match="rows"):
        digits.validate_inputs({"input": _batch(0)})
