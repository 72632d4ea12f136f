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
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

from protocol.errors import SignatureError

VAULT_DOMAIN_NAME = "inferledger PaymentVault"
REGISTRY_DOMAIN_NAME = "inferledger StakeRegistry"
DOMAIN_VERSION = "1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

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


def _signable(domain: Domain, types: dict[str, Any], message: dict[str, Any]) -> Any:
    return encode_typed_data(
        domain_data=domain.as_dict(), message_types=types, message_data=message
    )


def digest(domain: Domain, types: dict[str, Any], message: dict[str, Any]) -> bytes:
    """The 32-byte EIP-712 digest, as the contracts' ``hash*`` views compute it."""
    signable = _signable(domain, types, message)
    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))


def sign(domain: Domain, types: dict[str, Any], message: dict[str, Any], key: bytes) -> bytes:
    signed = Account.sign_message(_signable(domain, types, message), private_key=key)
    return bytes(signed.signature)


def recover(domain: Domain, types: dict[str, Any], message: dict[str, Any], sig: bytes) -> str:
    """The checksummed signer address; raises SignatureError on a malformed or high-s sig."""
    if len(sig) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(sig)}")
    s = int.from_bytes(sig[32:64], "big")
    if s > SECP256K1_N // 2:
        raise SignatureError("signature s value is in the upper half of the curve order")
    if sig[64] not in (27, 28):
        raise SignatureError("signature v must be 27 or 28")
    try:
        return str(Account.recover_message(_signable(domain, types, message), signature=sig))
    except Exception as exc:  # eth_keys raises several types for bad points
        raise SignatureError("signature does not recover to an address") from exc


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
            abi_encode(
                ["address", "address", "uint256"],
                [to_checksum_address(vault), to_checksum_address(client), cumulative_amount],
            )
        )
    )
