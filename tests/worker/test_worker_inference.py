"""The model store: pinned sessions, determinism at batch 1, refusal of tampered models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from protocol.hashing import result_hash
from protocol.manifest import load_models
from worker.errors import (
    InvalidInputs,
    ModelStoreError,
    ModelTampered,
    UnknownModel,
)
from worker.inference import ModelStore

JOB_ROWS = 50  # digits-cnn takes at most 64 rows per job


def _model_hash(models_dir: Path) -> str:
    return next(iter(load_models(models_dir)))


def _run_all(store: ModelStore, model: str, digits: npt.NDArray[np.float32]) -> np.ndarray:
    parts = [
        store.run(model, {"input": digits[i : i + JOB_ROWS]})["logits"]
        for i in range(0, len(digits), JOB_ROWS)
    ]
    return np.concatenate(parts)


def test_two_sessions_give_identical_bytes(
    models_dir: Path, digits: npt.NDArray[np.float32]
) -> None:
    model = _model_hash(models_dir)
    first = _run_all(ModelStore(models_dir), model, digits)
    second = _run_all(ModelStore(models_dir), model, digits)
    assert first.shape == (200, 10) and first.dtype == np.float32
    assert first.tobytes() == second.tobytes()


def test_rows_run_at_batch_one(models_dir: Path, digits: npt.NDArray[np.float32]) -> None:
    store = ModelStore(models_dir)
    model = _model_hash(models_dir)
    whole = store.run(model, {"input": digits[:20]})["logits"]
    for row in range(20):
        alone = store.run(model, {"input": digits[row : row + 1]})["logits"]
        assert alone.tobytes() == whole[row : row + 1].tobytes()


def test_sessions_use_the_pinned_settings(models_dir: Path) -> None:
    store = ModelStore(models_dir, opt_level="disabled", threads=2)
    options = store.session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert store.session(_model_hash(models_dir)).get_providers() == ["CPUExecutionProvider"]
    fingerprint = store.fingerprint()
    assert (fingerprint.ort, fingerprint.provider) == (ort.__version__, "CPUExecutionProvider")
    assert (fingerprint.opt_level, fingerprint.threads) == ("disabled", 2)


def test_tampered_model_is_refused_on_load(models_dir: Path) -> None:
    model_file = next(models_dir.glob("*/model.onnx"))
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="sha256"):
        ModelStore(models_dir)


def test_model_tampered_after_load_is_refused(
    models_dir: Path, digits: npt.NDArray[np.float32]
) -> None:
    store = ModelStore(models_dir)
    model = _model_hash(models_dir)
    model_file = next(models_dir.glob("*/model.onnx"))
    model_file.write_bytes(model_file.read_bytes() + b"\x00")
    with pytest.raises(ModelTampered) as caught:
        store.run(model, {"input": digits[:1]})
    assert caught.value.expected == model


def test_unknown_model_and_bad_inputs(models_dir: Path, digits: npt.NDArray[np.float32]) -> None:
    store = ModelStore(models_dir)
    with pytest.raises(UnknownModel) as caught:
        store.run("0x" + "ab" * 32, {"input": digits[:1]})
    assert caught.value.model_hash == "ab" * 32
    model = _model_hash(models_dir)
    with pytest.raises(InvalidInputs):
        store.run(model, {"input": digits[:1].astype(np.float64)})
    with pytest.raises(InvalidInputs):
        store.run(model, {"pixels": digits[:1]})
    with pytest.raises(InvalidInputs):
        store.run(model, {"input": digits[:1].reshape(1, 64)})


def test_missing_or_empty_models_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="not a directory"):
        ModelStore(tmp_path / "nope")
    with pytest.raises(ModelStoreError, match="no models"):
        ModelStore(tmp_path)


def test_result_hash_changes_with_one_ulp(
    models_dir: Path, digits: npt.NDArray[np.float32]
) -> None:
    store = ModelStore(models_dir)
    model = _model_hash(models_dir)
    inputs = {"input": digits[:8]}
    outputs = store.run(model, inputs)
    changed = {"logits": outputs["logits"].copy()}
    value = changed["logits"][3, 7]
    changed["logits"][3, 7] = np.nextafter(value, np.float32(np.inf), dtype=np.float32)
    assert changed["logits"][3, 7] != value
    model_bytes = bytes.fromhex(model)
    assert result_hash(model_bytes, inputs, outputs) == result_hash(model_bytes, inputs, outputs)
    assert result_hash(model_bytes, inputs, changed) != result_hash(model_bytes, inputs, outputs)
