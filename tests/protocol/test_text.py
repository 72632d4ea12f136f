"""protocol.text: texts become minilm-l6's token tensors with the pinned tokenizer, within
its limits, the same way every time."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from protocol import text
from protocol.errors import ManifestError, TextError, TextTooLong
from protocol.hashing import input_hash
from protocol.manifest import Manifest, load_manifest

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def minilm() -> Manifest:
    return load_manifest(MODELS / "minilm-l6")


def test_texts_become_padded_token_rows(minilm: Manifest) -> None:
    arrays = text.encode(minilm, ["Hello world!", "A longer sentence, with punctuation."])
    assert sorted(arrays) == ["attention_mask", "input_ids", "token_type_ids"]
    assert all(a.dtype == np.int64 and a.shape == (2, 11) for a in arrays.values())
    # [CLS] hello world ! [SEP], then [PAD] up to the longest text of the job
    assert arrays["input_ids"][0].tolist() == [101, 7592, 2088, 999, 102] + [0] * 6
    assert arrays["attention_mask"][0].tolist() == [1] * 5 + [0] * 6
    assert arrays["attention_mask"][1].tolist() == [1] * 11
    assert arrays["input_ids"][1, 0] == 101 and arrays["input_ids"][1, -1] == 102
    assert not arrays["token_type_ids"].any()
    assert minilm.validate_inputs(arrays) == 2


def test_tokens_are_the_same_every_time(minilm: Manifest) -> None:
    texts = ["The quick brown fox.", "Ünïcödé and emoji 🙂 are fine", ""]
    first = input_hash(text.encode(minilm, texts))
    assert input_hash(text.encode(minilm, texts)) == first
    assert input_hash(text.encode(minilm, list(reversed(texts)))) != first
    # the empty text is [CLS] [SEP]
    assert text.encode(minilm, [""])["input_ids"].tolist() == [[101, 102]]


def test_the_longest_text_allowed_is_taken(minilm: Manifest) -> None:
    assert minilm.text is not None
    longest = " ".join(["word"] * (minilm.text.max_tokens - 2))  # plus [CLS] and [SEP]
    arrays = text.encode(minilm, [longest])
    assert arrays["input_ids"].shape == (1, minilm.text.max_tokens)
    assert minilm.validate_inputs(arrays) == 1


def test_a_text_over_the_token_limit_is_refused(minilm: Manifest) -> None:
    assert minilm.text is not None
    too_long = " ".join(["word"] * (minilm.text.max_tokens - 1))
    with pytest.raises(TextTooLong, match="text 1 has 257 tokens; minilm-l6 takes at most 256"):
        text.encode(minilm, ["short", too_long])
    assert TextTooLong.code == "text_too_long"


def test_a_text_over_the_character_limit_is_refused_before_tokenizing(minilm: Manifest) -> None:
    assert minilm.text is not None
    with pytest.raises(TextTooLong, match="characters"):
        text.encode(minilm, ["a" * (minilm.text.max_chars + 1)])
    # one long word is one [UNK] token: the character limit is what stops it
    within = "a" * minilm.text.max_chars
    assert text.encode(minilm, [within])["input_ids"].shape == (1, 3)


@pytest.mark.parametrize("count", [0, 33])
def test_a_job_of_no_or_too_many_texts_is_refused(minilm: Manifest, count: int) -> None:
    with pytest.raises(TextError, match="between 1 and 32 texts"):
        text.encode(minilm, ["hi"] * count)


def test_a_tensor_model_takes_no_text() -> None:
    digits = load_manifest(MODELS / "digits-cnn")
    with pytest.raises(TextError, match="does not take text"):
        text.encode(digits, ["hi"])


def test_the_tokenizer_is_checked_when_it_is_loaded(minilm: Manifest, tmp_path: Path) -> None:
    """A tokenizer changed after the manifest was read is refused, not used."""
    assert minilm.text is not None
    copy = tmp_path / "tokenizer.json"
    shutil.copy(minilm.text.tokenizer, copy)
    data = json.loads(copy.read_text())
    data["model"]["vocab"]["hello"], data["model"]["vocab"]["world"] = 2088, 7592
    copy.write_text(json.dumps(data))
    changed = replace(minilm, text=replace(minilm.text, tokenizer=copy))
    with pytest.raises(ManifestError, match="has sha256"):
        text.encode(changed, ["hello world"])
