"""A stand-in for digits-cnn with the same signature (Flatten, MatMul, Add): a model of
another hash, for a device that lacks the API's model, or when digits-cnn is being rebuilt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def build_tiny_model(directory: Path) -> None:
    """A stand-in for digits-cnn with the same signature: Flatten, MatMul, Add."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(10,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
        ],
        "tiny-digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    directory.mkdir(parents=True)
    data = model.SerializeToString()
    (directory / "model.onnx").write_bytes(data)
    manifest = {
        "name": "tiny-digits",
        "version": "0.0.1",
        "file": "model.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}],
        "max_batch_rows": 64,
        "price_per_row_wei": "1000000000000000",
        "tolerance_abs": 0.0001,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
