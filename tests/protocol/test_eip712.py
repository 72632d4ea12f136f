"""EIP-712 signing and recovery (protocol.eip712): round trips, the signature rules shared
with OpenZeppelin's ECDSA (65 bytes, low s, v in {27, 28}), domain binding, and the job id."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import KeyAPI
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import eip712
from protocol.eip712 import (
    ATTESTATION_TYPES,
    REGISTRATION_TYPES,
    SECP256K1_N,
    VOUCHER_TYPES,
    Attestation,
    Domain,
    Voucher,
)
from protocol.errors import SignatureError

VAULT = "0x" + "a1" * 20
REGISTRY = "0x" + "b2" * 20
VAULT_DOMAIN = Domain(eip712.VAULT_DOMAIN_NAME, 31337, VAULT)
REGISTRY_DOMAIN = Domain(eip712.REGISTRY_DOMAIN_NAME, 31337, REGISTRY)

keys = st.integers(1, SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
uint256 = st.integers(0, 2**256 - 1)
bytes32 = st.binary(min_size=32, max_size=32)


def _key(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()


def _address(key: bytes) -> str:
    return str(Account.from_key(key).address)


def _attestation(seed: str = "att") -> Attestation:
    parts = [hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(5)]
    return Attestation(*parts)


def _high_s(sig: bytes) -> bytes:
    """The other valid signature of the same message: s -> n - s, v flipped."""
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


@settings(max_examples=30, deadline=None)
@given(key=keys, client=addresses, amount=uint256, expiry=uint256)
def test_voucher_sign_recover_round_trip(key: bytes, client: str, amount: int, expiry: int) -> None:
    voucher = Voucher(client, amount, expiry)
    sig = eip712.sign_voucher(VAULT_DOMAIN, voucher, key)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2  # signers emit low s
    assert eip712.recover_voucher(VAULT_DOMAIN, voucher, sig) == _address(key)


@settings(max_examples=30, deadline=None)
@given(key=keys, fields=st.tuples(bytes32, bytes32, bytes32, bytes32, bytes32))
def test_attestation_sign_recover_round_trip(key: bytes, fields: tuple[bytes, ...]) -> None:
    att = Attestation(*fields)
    sig = eip712.sign_attestation(REGISTRY_DOMAIN, att, key)
    assert eip712.recover_attestation(REGISTRY_DOMAIN, att, sig) == _address(key)


@settings(max_examples=20, deadline=None)
@given(key=keys, contributor=addresses, deadline=uint256)
def test_registration_sign_recover_round_trip(key: bytes, contributor: str, deadline: int) -> None:
    worker = _address(key)
    sig = eip712.sign_registration(REGISTRY_DOMAIN, worker, contributor, deadline, key)
    message = eip712.registration_message(worker, contributor, deadline)
    assert eip712.recover(REGISTRY_DOMAIN, REGISTRATION_TYPES, message, sig) == worker


def _reference_digest(domain: Domain, types: dict, message: dict) -> bytes:
    """The digest by eth-account's general EIP-712 encoder (independent of protocol.eip712)."""
    signable = encode_typed_data(
        domain_data=domain.as_dict(), message_types=types, message_data=message
    )
    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))


@settings(max_examples=40, deadline=None)
@given(
    chain_id=st.integers(1, 2**64),
    contract=addresses,
    client=addresses,
    amount=uint256,
    expiry=uint256,
    fields=st.tuples(bytes32, bytes32, bytes32, bytes32, bytes32),
    deadline=uint256,
)
def test_digests_match_eth_account_encoder(
    chain_id: int,
    contract: str,
    client: str,
    amount: int,
    expiry: int,
    fields: tuple[bytes, ...],
    deadline: int,
) -> None:
    vault = Domain(eip712.VAULT_DOMAIN_NAME, chain_id, contract)
    registry = Domain(eip712.REGISTRY_DOMAIN_NAME, chain_id, contract)
    voucher = Voucher(client, amount, expiry).message()
    att = Attestation(*fields).message()
    reg = eip712.registration_message(client, contract, deadline)
    for domain, types, message in (
        (vault, VOUCHER_TYPES, voucher),
        (registry, ATTESTATION_TYPES, att),
        (registry, REGISTRATION_TYPES, reg),
    ):
        assert eip712.digest(domain, types, message) == _reference_digest(domain, types, message)


@settings(max_examples=20, deadline=None)
@given(key=keys, client=addresses, amount=uint256)
def test_signatures_interoperate_with_eth_account(key: bytes, client: str, amount: int) -> None:
    voucher = Voucher(client, amount, 1)
    signable = encode_typed_data(
        domain_data=VAULT_DOMAIN.as_dict(),
        message_types=VOUCHER_TYPES,
        message_data=voucher.message(),
    )
    theirs = bytes(Account.sign_message(signable, private_key=key).signature)
    assert eip712.recover_voucher(VAULT_DOMAIN, voucher, theirs) == _address(key)
    ours = eip712.sign_voucher(VAULT_DOMAIN, voucher, key)
    assert Account.recover_message(signable, signature=ours) == _address(key)
    assert ours == theirs  # both use RFC 6979 deterministic nonces


def test_digest_is_what_gets_signed() -> None:
    """The digest the contracts compute is exactly the hash the ECDSA signature covers."""
    key = _key("digest")
    voucher = Voucher("0x" + "c3" * 20, 10**18, 1_900_000_000)
    sig = eip712.sign_voucher(VAULT_DOMAIN, voucher, key)
    digest = eip712.digest(VAULT_DOMAIN, VOUCHER_TYPES, voucher.message())
    assert len(digest) == 32
    signature = KeyAPI.Signature(signature_bytes=sig[:64] + bytes([sig[64] - 27]))
    public_key = signature.recover_public_key_from_msg_hash(digest)
    assert public_key.to_checksum_address() == _address(key)


def test_high_s_signature_is_refused() -> None:
    key = _key("high-s")
    att = _attestation()
    sig = eip712.sign_attestation(REGISTRY_DOMAIN, att, key)
    flipped = _high_s(sig)
    # the flipped signature is mathematically valid for the same key ...
    digest = eip712.digest(REGISTRY_DOMAIN, ATTESTATION_TYPES, att.message())
    malleable = KeyAPI.Signature(signature_bytes=flipped[:64] + bytes([flipped[64] - 27]))
    assert malleable.recover_public_key_from_msg_hash(digest).to_checksum_address() == _address(key)
    # ... and refused by rule, as OpenZeppelin's ECDSA refuses it on chain
    with pytest.raises(SignatureError, match="upper half"):
        eip712.recover_attestation(REGISTRY_DOMAIN, att, flipped)
    assert eip712.recover_attestation(REGISTRY_DOMAIN, att, sig) == _address(key)


def test_s_at_the_half_order_boundary() -> None:
    """s == n // 2 is the largest accepted value; n // 2 + 1 is refused before any recovery."""
    att = _attestation("boundary")
    r = (12345).to_bytes(32, "big")
    boundary = r + (SECP256K1_N // 2).to_bytes(32, "big") + b"\x1b"
    try:
        recovered = eip712.recover_attestation(REGISTRY_DOMAIN, att, boundary)
    except SignatureError as exc:  # r may not be on the curve, but s is not the reason
        recovered = exc.detail
        assert "upper half" not in exc.detail
    else:
        assert recovered.startswith("0x") and len(recovered) == 42
    above = r + (SECP256K1_N // 2 + 1).to_bytes(32, "big") + b"\x1b"
    with pytest.raises(SignatureError, match="upper half"):
        eip712.recover_attestation(REGISTRY_DOMAIN, att, above)


@pytest.mark.parametrize("length", [0, 1, 64, 66, 130])
def test_wrong_length_is_refused(length: int) -> None:
    att = _attestation()
    sig = eip712.sign_attestation(REGISTRY_DOMAIN, att, _key("len"))
    bad = (sig * 3)[:length]
    with pytest.raises(SignatureError, match="65 bytes"):
        eip712.recover_attestation(REGISTRY_DOMAIN, att, bad)


@pytest.mark.parametrize("v", [0, 1, 26, 29, 35, 255])
def test_bad_v_is_refused(v: int) -> None:
    voucher = Voucher("0x" + "c3" * 20, 5, 6)
    sig = eip712.sign_voucher(VAULT_DOMAIN, voucher, _key("v"))
    with pytest.raises(SignatureError, match="v must be 27 or 28"):
        eip712.recover_voucher(VAULT_DOMAIN, voucher, sig[:64] + bytes([v]))


def test_zero_signature_does_not_recover() -> None:
    voucher = Voucher("0x" + "c3" * 20, 5, 6)
    with pytest.raises(SignatureError):
        eip712.recover_voucher(VAULT_DOMAIN, voucher, bytes(64) + b"\x1b")


def test_flipped_v_recovers_to_another_address() -> None:
    voucher = Voucher("0x" + "c3" * 20, 7, 8)
    key = _key("flip-v")
    sig = eip712.sign_voucher(VAULT_DOMAIN, voucher, key)
    other = sig[:64] + bytes([55 - sig[64]])
    try:
        recovered = eip712.recover_voucher(VAULT_DOMAIN, voucher, other)
    except SignatureError as exc:  # no point for that parity: refused outright
        recovered = exc.detail
    assert recovered != _address(key)


def test_voucher_for_another_chain_or_vault_recovers_elsewhere() -> None:
    key = _key("domain")
    signer = _address(key)
    voucher = Voucher(signer, 10**18, 1_900_000_000)
    sig = eip712.sign_voucher(VAULT_DOMAIN, voucher, key)
    assert eip712.recover_voucher(VAULT_DOMAIN, voucher, sig) == signer

    other_chain = Domain(eip712.VAULT_DOMAIN_NAME, 1, VAULT)
    other_vault = Domain(eip712.VAULT_DOMAIN_NAME, 31337, "0x" + "d4" * 20)
    other_name = Domain(eip712.REGISTRY_DOMAIN_NAME, 31337, VAULT)
    for domain in (other_chain, other_vault, other_name):
        assert eip712.recover_voucher(domain, voucher, sig) != signer
        assert eip712.digest(domain, VOUCHER_TYPES, voucher.message()) != eip712.digest(
            VAULT_DOMAIN, VOUCHER_TYPES, voucher.message()
        )
    # and a voucher signed on the other chain does not recover to its signer here
    foreign = eip712.sign_voucher(other_chain, voucher, key)
    assert eip712.recover_voucher(VAULT_DOMAIN, voucher, foreign) != signer


def test_changed_voucher_field_recovers_elsewhere() -> None:
    key = _key("fields")
    signer = _address(key)
    voucher = Voucher(signer, 1000, 2000)
    sig = eip712.sign_voucher(VAULT_DOMAIN, voucher, key)
    for changed in (Voucher(signer, 1001, 2000), Voucher(signer, 1000, 2001)):
        assert eip712.recover_voucher(VAULT_DOMAIN, changed, sig) != signer


def test_address_case_does_not_change_the_digest() -> None:
    client = "0x" + "ab" * 20
    lower = Voucher(client, 1, 2)
    upper = Voucher("0x" + client[2:].upper(), 1, 2)
    assert eip712.digest(VAULT_DOMAIN, VOUCHER_TYPES, lower.message()) == eip712.digest(
        VAULT_DOMAIN, VOUCHER_TYPES, upper.message()
    )


@pytest.mark.parametrize("field", range(5))
@pytest.mark.parametrize("length", [0, 31, 33])
def test_attestation_fields_must_be_32_bytes(field: int, length: int) -> None:
    parts = [bytes(32)] * 5
    parts[field] = b"\x01" * length
    with pytest.raises(SignatureError, match="32 bytes"):
        Attestation(*parts).message()


def test_type_hashes_match_the_solidity_strings() -> None:
    """The Solidity type strings (VOUCHER_TYPEHASH etc.) encode the same field lists."""

    def type_string(types: dict[str, list[dict[str, str]]]) -> str:
        ((name, fields),) = types.items()
        return name + "(" + ",".join(f"{f['type']} {f['name']}" for f in fields) + ")"

    assert type_string(VOUCHER_TYPES) == (
        "Voucher(address client,uint256 cumulativeAmount,uint256 expiry)"
    )
    assert type_string(ATTESTATION_TYPES) == (
        "Attestation(bytes32 jobId,bytes32 modelHash,bytes32 inputHash,bytes32 resultHash,"
        "bytes32 fingerprint)"
    )
    assert type_string(REGISTRATION_TYPES) == (
        "WorkerRegistration(address worker,address contributor,uint256 deadline)"
    )


@settings(max_examples=50, deadline=None)
@given(vault=addresses, client=addresses, amount=uint256)
def test_job_id_formula(vault: str, client: str, amount: int) -> None:
    """job_id = keccak256(abi.encode(address vault, address client, uint256 cumulativeAmount))."""
    by_hand = keccak(
        bytes(12)
        + bytes.fromhex(vault[2:])
        + bytes(12)
        + bytes.fromhex(client[2:])
        + amount.to_bytes(32, "big")
    )
    assert eip712.job_id(vault, client, amount) == by_hand
    assert eip712.job_id(vault.upper().replace("0X", "0x"), client, amount) == by_hand


def test_job_id_names_one_voucher() -> None:
    vault, client = "0x" + "a1" * 20, "0x" + "c3" * 20
    base = eip712.job_id(vault, client, 100)
    assert eip712.job_id(vault, client, 100) == base  # a retried request names the same job
    others = {
        eip712.job_id(vault, client, 101),
        eip712.job_id(vault, "0x" + "c4" * 20, 100),
        eip712.job_id("0x" + "a2" * 20, client, 100),
    }
    assert len(others | {base}) == 4
