"""Keccak-256, the hash of Ethereum (not NIST SHA3-256: the padding differs).

safe-pysha3's C implementation: eth_utils' default backend (pycryptodome) spends more on
setting each hash up than on hashing 100 bytes, and the request path hashes several times
per request (EIP-712 struct and digest, the signer's address, the job id)."""

from __future__ import annotations

from sha3 import keccak_256  # type: ignore[import-untyped]


def keccak(data: bytes) -> bytes:
    return bytes(keccak_256(data).digest())


def keccak_text(text: str) -> bytes:
    return bytes(keccak_256(text.encode()).digest())
