"""Write ``tests/vectors/eip712.json``: fixed EIP-712 and Merkle-leaf vectors computed by the
Python side (``protocol.eip712`` and ``protocol.merkle``), which
``tests/contracts/vectors.test.js`` recomputes with ethers and @openzeppelin/merkle-tree.

Run ``.venv/bin/python tests/vectors/make_vectors.py`` after changing a format;
``tests/protocol/test_vectors.py`` fails while the file on disk differs from ``build_vectors()``.
The addresses are fixed, obviously fake values (no deployed contract or key behind them); they
have hex letters so that the EIP-55 checksum casing is exercised on both sides.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from eth_utils import to_checksum_address  # noqa: E402

from protocol import eip712  # noqa: E402
from protocol.merkle import leaf_hash  # noqa: E402

VECTORS_PATH = Path(__file__).resolve().parent / "eip712.json"

CHAIN_ID = 31337
VAULT = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
REGISTRY = "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
CLIENT = "0xcccccccccccccccccccccccccccccccccccccccc"
WORKER = "0xdddddddddddddddddddddddddddddddddddddddd"
CONTRIBUTOR = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
LEAF_ACCOUNT = "0xabcdabcdabcdabcdabcdabcdabcdabcdabcdabcd"

VOUCHER_AMOUNT = 123_456_789_000_000_000_000  # 123.456789 tokens, above 2**64
VOUCHER_EXPIRY = 1_900_000_000
REGISTRATION_DEADLINE = 1_800_000_000
LEAF_AMOUNT = 2**200 + 12345  # far above 2**64: catches a truncated uint256


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def build_vectors() -> dict[str, Any]:
    """Every vector, as written to eip712.json (amounts as decimal strings, bytes32 as 0x-hex)."""
    vault_domain = eip712.Domain(eip712.VAULT_DOMAIN_NAME, CHAIN_ID, VAULT)
    registry_domain = eip712.Domain(eip712.REGISTRY_DOMAIN_NAME, CHAIN_ID, REGISTRY)

    voucher = eip712.Voucher(CLIENT, VOUCHER_AMOUNT, VOUCHER_EXPIRY)
    attestation = eip712.Attestation(
        job_id=eip712.job_id(VAULT, CLIENT, VOUCHER_AMOUNT),
        model_hash=_sha("vector model"),
        input_hash=_sha("vector input"),
        result_hash=_sha("vector result"),
        fingerprint=_sha("vector fingerprint"),
    )
    registration = eip712.registration_message(WORKER, CONTRIBUTOR, REGISTRATION_DEADLINE)
    voucher_msg = voucher.message()
    att_msg = attestation.message()

    return {
        "chainId": CHAIN_ID,
        "vault": vault_domain.as_dict()["verifyingContract"],
        "registry": registry_domain.as_dict()["verifyingContract"],
        "voucher": {
            "client": voucher_msg["client"],
            "cumulativeAmount": str(voucher.cumulative_amount),
            "expiry": str(voucher.expiry),
        },
        "voucherDigest": _hex(eip712.digest(vault_domain, eip712.VOUCHER_TYPES, voucher_msg)),
        "attestation": {
            "jobId": _hex(att_msg["jobId"]),
            "modelHash": _hex(att_msg["modelHash"]),
            "inputHash": _hex(att_msg["inputHash"]),
            "resultHash": _hex(att_msg["resultHash"]),
            "fingerprint": _hex(att_msg["fingerprint"]),
        },
        "attestationDigest": _hex(
            eip712.digest(registry_domain, eip712.ATTESTATION_TYPES, att_msg)
        ),
        "registration": {
            "worker": registration["worker"],
            "contributor": registration["contributor"],
            "deadline": str(registration["deadline"]),
        },
        "registrationDigest": _hex(
            eip712.digest(registry_domain, eip712.REGISTRATION_TYPES, registration)
        ),
        "leaf": {
            "account": to_checksum_address(LEAF_ACCOUNT),
            "cumulativeAmount": str(LEAF_AMOUNT),
        },
        "leafHash": _hex(leaf_hash(LEAF_ACCOUNT, LEAF_AMOUNT)),
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, sort_keys=True) + "\n"


def main() -> None:
    VECTORS_PATH.write_text(render(build_vectors()))
    print(f"wrote {VECTORS_PATH}")


if __name__ == "__main__":
    main()
