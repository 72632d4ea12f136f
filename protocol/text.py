"""Text in: a text model's texts become its token tensors, one row per text.

The API tokenizes with the tokenizer file its manifest pins by sha256 (a Hugging Face
``tokenizer.json``, run by the ``tokenizers`` package): no truncation, each text within the
manifest's ``max_chars`` and ``max_tokens`` (special tokens included) or refused, and rows
padded on the right to the job's longest text with the tokenizer's own pad id. The tokens,
not the text, are the job's input: they are what is hashed, stored, sent to workers and
attested, so the text's tokenization is fixed once, here.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from protocol.errors import ManifestError, TextError, TextTooLong
from protocol.manifest import Manifest, TextSpec

_loaded: dict[tuple[Path, str], Tokenizer] = {}
_lock = threading.Lock()


def tokenizer(spec: TextSpec) -> Tokenizer:
    """The pinned tokenizer, loaded once per process from bytes checked against its sha256;
    truncation off and padding to the longest text of a call."""
    key = (spec.tokenizer, spec.tokenizer_sha256)
    with _lock:
        loaded = _loaded.get(key)
        if loaded is None:
            loaded = _loaded[key] = _load(spec)
        return loaded


def _load(spec: TextSpec) -> Tokenizer:
    try:
        raw = spec.tokenizer.read_bytes()
    except OSError as exc:
        raise ManifestError(f"tokenizer {spec.tokenizer} cannot be read: {exc}") from exc
    actual = hashlib.sha256(raw).hexdigest()
    if actual != spec.tokenizer_sha256:
        raise ManifestError(
            f"tokenizer {spec.tokenizer} has sha256 {actual}, the manifest says "
            f"{spec.tokenizer_sha256}"
        )
    loaded = Tokenizer.from_str(raw.decode("utf-8"))
    padding: dict[str, Any] = loaded.padding or {}
    loaded.no_truncation()
    loaded.enable_padding(
        direction="right",
        pad_id=int(padding.get("pad_id", 0)),
        pad_type_id=int(padding.get("pad_type_id", 0)),
        pad_token=str(padding.get("pad_token", "[PAD]")),
    )
    return loaded


def encode(manifest: Manifest, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
    """The model's input tensors for ``texts`` (one row each), or ``TextError``."""
    spec = manifest.text
    if spec is None:
        raise TextError(f"model {manifest.name} does not take text")
    if not 1 <= len(texts) <= manifest.max_batch_rows:
        raise TextError(
            f"a job must have between 1 and {manifest.max_batch_rows} texts, got {len(texts)}"
        )
    for i, text in enumerate(texts):
        if len(text) > spec.max_chars:
            raise TextTooLong(
                f"text {i} has {len(text)} characters; {manifest.name} takes at most "
                f"{spec.max_chars}"
            )
    encodings = tokenizer(spec).encode_batch(list(texts))
    for i, encoding in enumerate(encodings):
        count = sum(encoding.attention_mask)
        if count > spec.max_tokens:
            raise TextTooLong(
                f"text {i} has {count} tokens; {manifest.name} takes at most "
                f"{spec.max_tokens} (special tokens included)"
            )
    fields = {
        "ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "type_ids": [e.type_ids for e in encodings],
    }
    return {name: np.asarray(fields[field], dtype=np.int64) for field, name in spec.tensors}
