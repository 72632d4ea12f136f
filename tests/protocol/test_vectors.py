"""tests/vectors/eip712.json (read by tests/contracts/vectors.test.js) is exactly what
tests/vectors/make_vectors.py builds now, so the cross-language vectors cannot go stale."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from protocol import eip712
from protocol.merkle import leaf_hash

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"


def _make_vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vector_file_is_up_to_date() -> None:
    make_vectors = _make_vectors()
    path = VECTORS_DIR / "eip712.json"
    assert path.exists(), "run: .venv/bin/python tests/vectors/make_vectors.py"
    on_disk = json.loads(path.read_text())
    assert on_disk == make_vectors.build_vectors(), (
        "tests/vectors/eip712.json is stale: run .venv/bin/python tests/vectors/make_vectors.py"
    )
    assert path.read_text() == make_vectors.render(on_disk)


def test_vector_file_has_the_keys_vectors_test_js_reads() -> None:
    vectors = json.loads((VECTORS_DIR / "eip712.json").read_text())
    assert set(vectors) == {
        "chainId",
        "vault",
        "registry",
        "voucher",
        "voucherDigest",
        "attestation",
        "attestationDigest",
        "registration",
        "registrationDigest",
        "leaf",
        "leafHash",
    }
    assert set(vectors["voucher"]) == {"client", "cumulativeAmount", "expiry"}
    assert set(vectors["attestation"]) == {
        "jobId",
        "modelHash",
        "inputHash",
        "resultHash",
        "fingerprint",
    }
    assert set(vectors["registration"]) == {"worker", "contributor", "deadline"}
    assert set(vectors["leaf"]) == {"account", "cumulativeAmount"}
    for amount in (
        vectors["voucher"]["cumulativeAmount"],
        vectors["voucher"]["expiry"],
        vectors["registration"]["deadline"],
        vectors["leaf"]["cumulativeAmount"],
    ):
        assert isinstance(amount, str) and amount.isdigit()  # decimal strings, not JSON numbers
    for key in ("voucherDigest", "attestationDigest", "registrationDigest", "leafHash"):
        assert vectors[key].startswith("0x") and len(bytes.fromhex(vectors[key][2:])) == 32
    for value in vectors["attestation"].values():
        assert value.startswith("0x") and len(bytes.fromhex(value[2:])) == 32


def test_vectors_are_recomputable_from_their_own_fields() -> None:
    """Independent of build_vectors: the digests follow from the JSON's own values."""
    v = json.loads((VECTORS_DIR / "eip712.json").read_text())
    vault = eip712.Domain(eip712.VAULT_DOMAIN_NAME, v["chainId"], v["vault"])
    registry = eip712.Domain(eip712.REGISTRY_DOMAIN_NAME, v["chainId"], v["registry"])
    voucher = eip712.Voucher(
        v["voucher"]["client"], int(v["voucher"]["cumulativeAmount"]), int(v["voucher"]["expiry"])
    )
    voucher_digest = eip712.digest(vault, eip712.VOUCHER_TYPES, voucher.message())
    assert "0x" + voucher_digest.hex() == v["voucherDigest"]
    att = eip712.Attestation(
        *(
            bytes.fromhex(v["attestation"][k][2:])
            for k in ("jobId", "modelHash", "inputHash", "resultHash", "fingerprint")
        )
    )
    att_digest = eip712.digest(registry, eip712.ATTESTATION_TYPES, att.message())
    assert "0x" + att_digest.hex() == v["attestationDigest"]
    reg = v["registration"]
    message = eip712.registration_message(reg["worker"], reg["contributor"], int(reg["deadline"]))
    reg_digest = eip712.digest(registry, eip712.REGISTRATION_TYPES, message)
    assert "0x" + reg_digest.hex() == v["registrationDigest"]
    leaf = leaf_hash(v["leaf"]["account"], int(v["leaf"]["cumulativeAmount"]))
    assert "0x" + leaf.hex() == v["leafHash"]
    assert int(v["leaf"]["cumulativeAmount"]) > 2**64  # wide enough to catch truncation
