"""protocol.epochfile.canonical_bytes: orjson where it writes what the standard library writes,
the standard library everywhere else; the canonical form is the latter's, byte for byte."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import epochfile


def _standard(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# What an epoch document holds: text (any code point, control characters included),
# integers (some beyond 64 bits, which orjson refuses), None and booleans, lists, and dicts
# with text keys.
scalars = (
    st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
    | st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.none()
    | st.booleans()
)
documents = st.dictionaries(
    st.text(),
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=40,
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_canonical_bytes_are_the_standard_librarys(document: dict[str, Any]) -> None:
    assert epochfile.canonical_bytes(document) == _standard(document)


def test_each_writer_is_taken_where_it_should_be() -> None:
    ascii_doc = {"b": [1, None, True, 'x\u0001\n"\\'], "a": {"z": "0x" + "ab" * 32, "y": 2**63}}
    assert epochfile.canonical_bytes(ascii_doc) == _standard(ascii_doc)
    wide = {"amount": 2**64}  # orjson refuses it: the standard writer's bytes
    assert epochfile.canonical_bytes(wide) == b'{"amount":18446744073709551616}'
    accented = {"name": "caf\u00e9", "\u00e9": 1}  # escaped, keys sorted by code point
    assert epochfile.canonical_bytes(accented) == b'{"name":"caf\\u00e9","\\u00e9":1}'
    nested: Any = []
    for _ in range(300):  # deeper than orjson goes
        nested = [nested]
    assert epochfile.canonical_bytes({"n": nested}) == _standard({"n": nested})


def test_file_hash_is_keccak256() -> None:
    assert epochfile.file_hash(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
