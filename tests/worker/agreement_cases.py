"""The models of the agreement tests and their jobs: 1,000 one-row jobs per model, the same
every run (fixed seeds), and the smallest input change a dishonest worker might make.

- digits-cnn: the 200 held-out digits of ``samples.json``, noisy copies of them and random
  images; the change is one pixel moved by one of the digits' 16 grey levels.
- minilm-l6: sentences of 2 to 40-odd words from fixed word lists (accents, numbers and
  questions among them), tokenized as the API does (``protocol.text``); the change is one
  token swapped for its neighbour in the vocabulary. Its honest setting ``disabled/t1``
  dequantizes the int8 weights on every run (~27 ms a sentence here), so the third setting,
  the twin and the dishonest workers run every 10th sentence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from agreement_support import Arrays, Case, model_dir

from protocol import text
from protocol.manifest import load_manifest

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
JOBS_PER_MODEL = 1_000


def _case(tmp: Path, name: str, jobs: Callable[[Path, int], list[Arrays]], count: int) -> Case:
    models = model_dir(tmp, REPO_MODELS / name)
    cache = tmp / "model-cache"
    manifest = load_manifest(models / name, cache_dir=cache)
    return Case(manifest, models, cache, jobs(models / name, count), TAMPERS[name], STRIDES[name])


# -- digits-cnn -----------------------------------------------------------------------------


def digits_jobs(source: Path, count: int) -> list[Arrays]:
    """The held-out digits, then noisy copies of them (Gaussian, sigma 0.1, clipped to
    [0, 1]) up to 60%, then uniformly random images."""
    samples = json.loads((source / "samples.json").read_text())
    images = np.asarray(samples["images"], dtype=np.float32).reshape(-1, 1, 8, 8)[:count]
    rng = np.random.default_rng(5)
    noisy = max(0, count * 6 // 10 - len(images))
    picks = images[rng.integers(len(images), size=noisy)]
    made: list[npt.NDArray[np.floating[Any]]] = [
        images,
        np.clip(picks + rng.normal(0.0, 0.1, picks.shape), 0.0, 1.0),
        rng.random((count - len(images) - noisy, 1, 8, 8)),
    ]
    rows = np.concatenate(made).astype(np.float32)
    return [{"input": np.ascontiguousarray(rows[i : i + 1])} for i in range(count)]


def one_grey_level(inputs: Arrays) -> Arrays:
    """The centre pixel moved by one grey level (1/16), towards mid-grey."""
    image = inputs["input"].copy()
    pixel = image[0, 0, 4, 4]
    image[0, 0, 4, 4] = pixel + 1 / 16 if pixel < 0.5 else pixel - 1 / 16
    return {"input": image}


# -- minilm-l6 ------------------------------------------------------------------------------

SUBJECTS = (
    "the courier", "a small robot", "my neighbour's cat", "the night train", "our team",
    "the old lighthouse keeper", "a curious child", "the river", "every contributor",
    "the auditor", "a tired engineer", "the café owner", "this ledger", "the storm",
    "a quiet student", "Zoë", "the 42 volunteers", "nobody",
)  # fmt: skip
VERBS = (
    "carried", "painted", "counted", "ignored", "repaired", "followed", "described",
    "measured", "signed", "forgot", "delivered", "hid", "borrowed", "checked", "sang about",
    "built", "questioned", "photographed",
)  # fmt: skip
OBJECTS = (
    "the parcel", "seven blue lanterns", "a broken umbrella", "the results", "its shadow",
    "the Merkle root", "three warm loaves", "a map of the harbour", "the naïve plan",
    "forty invoices", "the last voucher", "an empty jar", "the mountain road",
    "a hash of every row", "the garden gate", "1,024 tiny screws",
)  # fmt: skip
EXTRAS = (
    "near the station", "in the rain", "before dawn", "at the market", "on the roof",
    "behind the library", "across the bridge", "under a streetlight", "in Zürich",
    "at 3 a.m.", "slowly", "carefully", "twice", "without a word", "happily",
)  # fmt: skip
LINKS = ("because", "although", "while", "and then", "so", "until", "but")


def sentences(count: int, seed: int = 11) -> list[str]:
    """``count`` distinct sentences: a subject and verb alone, or one to three clauses of
    subject, verb, object and sometimes a place or manner, joined by conjunctions."""
    rng = np.random.default_rng(seed)

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    def clause() -> str:
        extra = f" {pick(EXTRAS)}" if rng.random() < 0.5 else ""
        return f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)}{extra}"

    made: dict[str, None] = {}  # insertion-ordered and distinct
    while len(made) < count:
        clauses = int(rng.integers(4))
        if clauses == 0:
            sentence = f"{pick(SUBJECTS)} {pick(VERBS)}"
        else:
            sentence = " ".join(
                [clause()] + [f"{pick(LINKS)} {clause()}" for _ in range(1, clauses)]
            )
        made[sentence[0].upper() + sentence[1:] + ("?" if rng.random() < 0.2 else ".")] = None
    return list(made)


def minilm_jobs(source: Path, count: int) -> list[Arrays]:
    manifest = load_manifest(source, verify_file=False)
    return [dict(text.encode(manifest, [sentence])) for sentence in sentences(count)]


def one_token(inputs: Arrays) -> Arrays:
    """The first word's token swapped for its neighbour in the vocabulary."""
    ids = inputs["input_ids"].copy()
    ids[0, 1] += 1 if ids[0, 1] < 30_000 else -1
    return {**inputs, "input_ids": ids}


TAMPERS = {"digits-cnn": one_grey_level, "minilm-l6": one_token}
STRIDES = {"digits-cnn": 1, "minilm-l6": 10}


def digits_case(tmp: Path, count: int = JOBS_PER_MODEL) -> Case:
    return _case(tmp, "digits-cnn", digits_jobs, count)


def minilm_case(tmp: Path, count: int = JOBS_PER_MODEL) -> Case:
    return _case(tmp, "minilm-l6", minilm_jobs, count)


CASES: dict[str, Callable[[Path, int], Case]] = {
    "digits-cnn": digits_case,
    "minilm-l6": minilm_case,
}
