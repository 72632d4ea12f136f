"""EIP-712 domains and types shared with the contracts, and the job id.

Domains (chain id and verifying contract always bound):
- Vouchers: name "inferledger PaymentVault", version "1", the PaymentVault address.
- Attestations and worker registrations: name "inferledger StakeRegistry", version "1",
  the StakeRegistry address (slashing verifies attestations there).

Signatures are 65 bytes r||s||v; a high-s signature is refused here as OpenZeppelin's ECDSA
refuses it on chain, so both sides accept exactly the same set of signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import coincurve
from eth_utils import to_checksum_address as _to_checksum_address

from protocol.errors import SignatureError
from protocol.keccak import keccak, keccak_text

VAULT_DOMAIN_NAME = "inferledger PaymentVault"
REGISTRY_DOMAIN_NAME = "inferledger StakeRegistry"
DOMAIN_VERSION = "1"
DOMAIN_TYPEHASH = keccak_text(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@lru_cache(maxsize=1 << 16)
def to_checksum_address(address: str | bytes) -> str:
    """EIP-55 checksummed address, remembered: the same clients and workers come back on
    every request, and eth_utils spends a keccak and several regexes on each call."""
    return str(_to_checksum_address(address))


def _word(abi_type: str, value: Any) -> bytes:
    """One static ABI word (``abi.encode`` of address, uint256 or bytes32), without eth_abi's
    generic machinery, which cost more than the signature recovery on the request path."""
    if abi_type == "address":
        raw = bytes.fromhex(to_checksum_address(value)[2:])
        return b"\x00" * 12 + raw
    if abi_type == "uint256":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**256:
            raise ValueError(f"{value!r} is not a uint256")
        return value.to_bytes(32, "big")
    if abi_type == "bytes32":
        if not isinstance(value, bytes) or len(value) != 32:
            raise ValueError("a bytes32 value must be 32 bytes")
        return value
    raise ValueError(f"unsupported static ABI type {abi_type}")


def abi_encode_static(abi_types: list[str], values: list[Any]) -> bytes:
    return b"".join(_word(t, v) for t, v in zip(abi_types, values, strict=True))


VOUCHER_TYPES = {
    "Voucher": [
        {"name": "client", "type": "address"},
        {"name": "cumulativeAmount", "type": "uint256"},
        {"name": "expiry", "type": "uint256"},
    ]
}
ATTESTATION_TYPES = {
    "Attestation": [
        {"name": "jobId", "type": "bytes32"},
        {"name": "modelHash", "type": "bytes32"},
        {"name": "inputHash", "type": "bytes32"},
        {"name": "resultHash", "type": "bytes32"},
        {"name": "fingerprint", "type": "bytes32"},
    ]
}
REGISTRATION_TYPES = {
    "WorkerRegistration": [
        {"name": "worker", "type": "address"},
        {"name": "contributor", "type": "address"},
        {"name": "deadline", "type": "uint256"},
    ]
}


@dataclass(frozen=True)
class Domain:
    name: str
    chain_id: int
    verifying_contract: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


@dataclass(frozen=True)
class Voucher:
    client: str
    cumulative_amount: int
    expiry: int

    def message(self) -> dict[str, Any]:
        return {
            "client": to_checksum_address(self.client),
            "cumulativeAmount": self.cumulative_amount,
            "expiry": self.expiry,
        }


@dataclass(frozen=True)
class Attestation:
    job_id: bytes
    model_hash: bytes
    input_hash: bytes
    result_hash: bytes
    fingerprint: bytes

    def message(self) -> dict[str, Any]:
        for value in (self.job_id, self.model_hash, self.input_hash, self.result_hash):
            if len(value) != 32:
                raise SignatureError("attestation fields must be 32 bytes each")
        if len(self.fingerprint) != 32:
            raise SignatureError("attestation fields must be 32 bytes each")
        return {
            "jobId": self.job_id,
            "modelHash": self.model_hash,
            "inputHash": self.input_hash,
            "resultHash": self.result_hash,
            "fingerprint": self.fingerprint,
        }


@lru_cache(maxsize=64)
def domain_separator(domain: Domain) -> bytes:
    return bytes(
        keccak(
            abi_encode_static(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    DOMAIN_TYPEHASH,
                    bytes(keccak_text(domain.name)),
                    bytes(keccak_text(DOMAIN_VERSION)),
                    domain.chain_id,
                    to_checksum_address(domain.verifying_contract),
                ],
            )
        )
    )


@lru_cache(maxsize=16)
def _type_info(primary: str, fields: tuple[tuple[str, str], ...]) -> tuple[bytes, list[str]]:
    """Typehash and ABI types of a flat struct of static fields (all of ours are)."""
    signature = f"{primary}({','.join(f'{t} {n}' for n, t in fields)})"
    return bytes(keccak_text(signature)), [t for _, t in fields]


def digest(domain: Domain, types: dict[str, Any], message: dict[str, Any]) -> bytes:
    """The 32-byte EIP-712 digest, as the contracts' ``hash*`` views compute it:
    ``keccak256(0x1901 ‖ domainSeparator ‖ keccak256(abi.encode(typehash, fields…)))``."""
    ((primary, spec),) = types.items()
    fields = tuple((f["name"], f["type"]) for f in spec)
    typehash, abi_types = _type_info(primary, fields)
    struct = keccak(
        abi_encode_static(["bytes32", *abi_types], [typehash, *(message[n] for n, _ in fields)])
    )
    return bytes(keccak(b"\x19\x01" + domain_separator(domain) + struct))


@lru_cache(maxsize=8)
def _signing_key(key: bytes) -> coincurve.PrivateKey:
    """The parsed key, remembered: parsing (the public point) costs more than a signature,
    and a worker signs every job with the same key."""
    return coincurve.PrivateKey(key)


def sign_digest(digest32: bytes, key: bytes) -> bytes:
    """65-byte ``r‖s‖v`` over a 32-byte digest (libsecp256k1 always yields low s)."""
    rs_recid = _signing_key(bytes(key)).sign_recoverable(digest32, hasher=None)
    return rs_recid[:64] + bytes([rs_recid[64] + 27])


def recover_digest(digest32: bytes, sig: bytes) -> str:
    """The checksummed signer of a 65-byte low-s signature over ``digest32``."""
    if len(sig) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(sig)}")
    if int.from_bytes(sig[32:64], "big") > SECP256K1_N // 2:
        raise SignatureError("signature s value is in the upper half of the curve order")
    if sig[64] not in (27, 28):
        raise SignatureError("signature v must be 27 or 28")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes([sig[64] - 27]), digest32, hasher=None
        )
    except Exception as exc:  # coincurve raises ValueError/Exception for bad points
        raise SignatureError("signature does not recover to an address") from exc
    return str(to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:]))


def sign(domain: Domain, types: dict[str, Any], message: dict[str, Any], key: bytes) -> bytes:
    return sign_digest(digest(domain, types, message), key)


def recover(domain: Domain, types: dict[str, Any], message: dict[str, Any], sig: bytes) -> str:
    """The checksummed signer address; raises SignatureError on a malformed or high-s sig."""
    return recover_digest(digest(domain, types, message), sig)


def sign_voucher(domain: Domain, voucher: Voucher, key: bytes) -> bytes:
    return sign(domain, VOUCHER_TYPES, voucher.message(), key)


def recover_voucher(domain: Domain, voucher: Voucher, sig: bytes) -> str:
    return recover(domain, VOUCHER_TYPES, voucher.message(), sig)


def sign_attestation(domain: Domain, att: Attestation, key: bytes) -> bytes:
    return sign(domain, ATTESTATION_TYPES, att.message(), key)


def recover_attestation(domain: Domain, att: Attestation, sig: bytes) -> str:
    return recover(domain, ATTESTATION_TYPES, att.message(), sig)


def registration_message(worker: str, contributor: str, deadline: int) -> dict[str, Any]:
    return {
        "worker": to_checksum_address(worker),
        "contributor": to_checksum_address(contributor),
        "deadline": deadline,
    }


def sign_registration(
    domain: Domain, worker: str, contributor: str, deadline: int, key: bytes
) -> bytes:
    return sign(
        domain, REGISTRATION_TYPES, registration_message(worker, contributor, deadline), key
    )


def job_id(vault: str, client: str, cumulative_amount: int) -> bytes:
    """A job is named by the voucher that pays for it: each voucher of a client carries a
    strictly higher cumulative amount, so (vault, client, cumulative amount) is unique and a
    retried request with the same voucher names the same job (the idempotency key)."""
    return bytes(
        keccak(
            abi_encode_static(
                ["address", "address", "uint256"],
                [to_checksum_address(vault), to_checksum_address(client), cumulative_amount],
            )
        )
    )
