"""Per-job costs of verification next to one raw inference, measured in the same run.

Prints a table and writes bench/results/protocol.json (in ``bench/common.py``'s shape).
Figures are medians in microseconds and ratios against the raw onnxruntime inference of
the same row, so they compare across machines. Usage: ``make bench`` (or
``.venv/bin/python bench/run.py --rows 500``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from eth_account import Account

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from protocol import hashing, tensors  # noqa: E402
from protocol.eip712 import (  # noqa: E402
    Attestation,
    Domain,
    recover_attestation,
    sign_attestation,
)
from protocol.fingerprint import Fingerprint, cpu_isa_tier  # noqa: E402

MODEL = ROOT / "models" / "digits-cnn"


def median_us(fn: Callable[[int], Any], n: int) -> float:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="rows measured per figure")
    args = parser.parse_args()
    images = np.asarray(
        json.loads((MODEL / "samples.json").read_text())["images"], dtype=np.float32
    ).reshape(-1, 1, 8, 8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(MODEL / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    model_hash = hashing.model_hash((MODEL / "model.onnx").read_bytes())
    inputs = [{"input": images[i % len(images)][None]} for i in range(args.rows)]
    outputs = [{"logits": session.run(["logits"], x)[0]} for x in inputs]
    key = Account.create().key
    domain = Domain("inferledger StakeRegistry", 31337, "0x" + "11" * 20)
    fp = Fingerprint(ort.__version__, "CPUExecutionProvider", cpu_isa_tier(), "all", 1).digest()

    def attestation(i: int) -> Attestation:
        result = hashing.result_hash(model_hash, inputs[i], outputs[i])
        return Attestation(
            i.to_bytes(32, "big"), model_hash, hashing.input_hash(inputs[i]), result, fp
        )

    atts = [attestation(i) for i in range(args.rows)]
    sigs = [sign_attestation(domain, a, key) for a in atts]
    wire = [tensors.encode(o["logits"]) for o in outputs]
    figures = {
        "raw_inference_us": median_us(lambda i: session.run(["logits"], inputs[i]), args.rows),
        "worker_hash_us": median_us(
            lambda i: hashing.result_hash(model_hash, inputs[i], outputs[i]), args.rows
        ),
        "worker_sign_us": median_us(lambda i: sign_attestation(domain, atts[i], key), args.rows),
        "server_decode_and_rehash_us": median_us(
            lambda i: hashing.result_hash(
                model_hash, inputs[i], {"logits": tensors.decode(wire[i], max_bytes=1024)}
            ),
            args.rows,
        ),
        "server_recover_us": median_us(
            lambda i: recover_attestation(domain, atts[i], sigs[i]), args.rows
        ),
    }
    raw = figures["raw_inference_us"]
    print(f"{'figure':32} {'median µs':>10} {'× raw inference':>16}")
    for name, value in figures.items():
        print(f"{name:32} {value:10.1f} {value / raw:16.2f}")
    write_result(
        "protocol",
        {"figures_us": figures, "rows": args.rows},
        {"raw_inference_us": raw},
        vars(args),
    )


if __name__ == "__main__":
    main()
