"""Train a small CNN on scikit-learn's 8x8 digits and export it to ONNX.

The script is deterministic for a given PyTorch build: fixed seeds,
``torch.use_deterministic_algorithms(mode=True)`` and a single CPU thread. It

1. trains ``Conv(1->16) -> Conv(16->32) -> MaxPool -> Linear(512->64) ->
   Linear(64->10)`` on a stratified 80/20 split (``random_state=0``);
2. exports raw logits to ONNX (input ``input`` ``[batch, 1, 8, 8]``, output
   ``logits`` ``[batch, 10]``, dynamic batch) with the TorchScript exporter;
3. strips doc strings / producer metadata so the file bytes depend only on
   the trained weights, runs ``onnx.checker.check_model`` and compares
   onnxruntime against PyTorch (max abs diff < 1e-4);
4. checks batch-1 vs batch-64 bit-identity in onnxruntime over the whole
   dataset and writes ``manifest.json`` beside the ONNX file.

Usage::

    .venv/bin/pip install torch==2.13.0
    .venv/bin/python models/digits-cnn/train.py [--out PATH] [--epochs N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
OPSET = 17
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
# Cross-class tolerance: honest CPUs (ISA tier, optimisation level) differ by at most ~1e-5
# on these logits; a model with weights perturbed by 1e-5 differs by at least 3.7e-5.
TOLERANCE_ABS = 2e-5
EXPORT_MAX_DIFF = 1e-4  # onnxruntime against torch after export
MAX_BATCH_ROWS = 64
HERE = Path(__file__).resolve().parent


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, one 2x2 max-pool and a two-layer MLP head."""

    def __init__(self) -> None:
        """Create the layers (16 and 32 channels, 64 hidden units)."""
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, 1, 8, 8]`` images in [0, 1] to ``[batch, 10]`` logits."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def make_deterministic(seed: int) -> None:
    """Seed every RNG and force deterministic single-threaded kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(mode=True)
    torch.set_num_threads(1)
    # set_num_interop_threads raises once inter-op parallel work has started.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_all, x_train, x_test, y_train, y_test); images scaled to [0, 1]."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    return x, x_train, x_test, y_train, y_test


def train(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, epochs: int) -> None:
    """Train with Adam and cross-entropy on seeded shuffled mini-batches."""
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(xt):.4f}")


def export_onnx(model: nn.Module, out: Path) -> None:
    """Export raw logits to ONNX with a dynamic batch dimension, deterministically."""
    model.eval()
    dummy = torch.zeros(1, 1, 8, 8, dtype=torch.float32)
    # The legacy exporter is chosen on purpose (the dynamo one needs onnxscript).
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX")
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    proto = onnx.load(str(out))
    proto.producer_name = ""
    proto.producer_version = ""
    proto.domain = ""
    proto.model_version = 0
    proto.doc_string = ""
    del proto.metadata_props[:]
    proto.graph.name = "digits_cnn"
    proto.graph.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        value.doc_string = ""
    for init in proto.graph.initializer:
        init.doc_string = ""
    onnx.checker.check_model(proto, full_check=True)
    out.write_bytes(proto.SerializeToString(deterministic=True))


def make_session(path: Path) -> ort.InferenceSession:
    """Single-threaded CPU session with all graph optimizations enabled."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_batched(sess: ort.InferenceSession, x: np.ndarray, batch: int) -> np.ndarray:
    """Run ``x`` through ``sess`` in chunks of ``batch`` rows."""
    parts = [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(parts)


def dump_manifest(manifest: dict[str, object]) -> str:
    """Serialize the manifest with two-space indent and one line per tensor spec."""
    lines = []
    for key, value in manifest.items():
        if isinstance(value, list):
            specs = ",\n".join(f"    {json.dumps(item)}" for item in value)
            text = f"[\n{specs}\n  ]"
        else:
            text = json.dumps(value)
        lines.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> None:
    """Train, export, verify and write the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "model.onnx")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    make_deterministic(SEED)
    x_all, x_train, x_test, y_train, y_test = load_data()
    model = DigitsCNN()
    train(model, x_train, y_train, args.epochs)

    model.eval()
    with torch.no_grad():
        torch_test = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((torch_test.argmax(1) == y_test).mean())

    export_onnx(model, out)
    sess = make_session(out)
    ort_test = run_batched(sess, x_test, MAX_BATCH_ROWS)
    max_diff = float(np.abs(ort_test - torch_test).max())
    if max_diff >= EXPORT_MAX_DIFF:
        msg = f"onnxruntime vs torch max abs diff {max_diff:.3g} >= {EXPORT_MAX_DIFF}"
        raise SystemExit(msg)
    accuracy = float((ort_test.argmax(1) == y_test).mean())

    single = run_batched(sess, x_all, 1)
    batched = run_batched(sess, x_all, MAX_BATCH_ROWS)
    batch_invariant = bool(np.array_equal(single, batched))

    data = out.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    manifest = {
        "name": "digits-cnn",
        "version": "1.0.0",
        "description": (
            "Small CNN classifier for scikit-learn's 8x8 digits (logits for classes 0-9)"
        ),
        "file": out.name,
        "sha256": sha256,
        "source": {"kind": "file"},
        "input_kind": "tensor",
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}],
        "max_batch_rows": MAX_BATCH_ROWS,
        "price_per_row_wei": "1000000000000000",
        "tolerance_abs": TOLERANCE_ABS,
        "batch_invariant": batch_invariant,
        "test_accuracy": round(accuracy, 6),
    }
    manifest_path = out.parent / "manifest.json"
    manifest_path.write_text(dump_manifest(manifest), encoding="utf-8")

    print(f"test accuracy (torch)       {torch_acc:.4f}")
    print(f"test accuracy (onnxruntime) {accuracy:.4f} on {len(y_test)} samples")
    print(f"ort vs torch max abs diff   {max_diff:.3g}")
    print(f"batch 1 vs {MAX_BATCH_ROWS} bit-identical  {batch_invariant}")
    print(f"file {out}  size {len(data)} bytes")
    print(f"sha256 {sha256}")
    print(f"manifest {manifest_path}")


if __name__ == "__main__":
    main()
