"""The Python EIP-712 digests equal the deployed contracts' ``hash*`` views, and signatures from
``protocol.eip712`` recover on chain (OpenZeppelin ECDSA) to the same signer, with the same
refusals (high s, bad v, wrong length)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st
from web3.contract import Contract
from web3.exceptions import ContractLogicError

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

pytestmark = pytest.mark.chain

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
uint256 = st.integers(0, 2**256 - 1)
bytes32 = st.binary(min_size=32, max_size=32)
keys = st.integers(1, SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))


@pytest.fixture(scope="module")
def vault(chain: Any) -> Contract:
    return chain.actor(0).vault


@pytest.fixture(scope="module")
def registry(chain: Any) -> Contract:
    return chain.actor(0).registry


@pytest.fixture(scope="module")
def vault_domain(chain: Any) -> Domain:
    domain = chain.deployment.vault_domain
    assert domain.chain_id == chain.w3.eth.chain_id
    return domain


@pytest.fixture(scope="module")
def registry_domain(chain: Any) -> Domain:
    return chain.deployment.registry_domain


def _att_tuple(att: Attestation) -> tuple[bytes, ...]:
    return (att.job_id, att.model_hash, att.input_hash, att.result_hash, att.fingerprint)


@settings(max_examples=25, deadline=None)
@given(client=addresses, amount=uint256, expiry=uint256)
def test_voucher_digest_matches_contract(
    vault: Contract, vault_domain: Domain, client: str, amount: int, expiry: int
) -> None:
    voucher = Voucher(client, amount, expiry)
    python = eip712.digest(vault_domain, VOUCHER_TYPES, voucher.message())
    onchain = vault.functions.hashVoucher((voucher.message()["client"], amount, expiry)).call()
    assert bytes(onchain) == python


@settings(max_examples=25, deadline=None)
@given(fields=st.tuples(bytes32, bytes32, bytes32, bytes32, bytes32))
def test_attestation_digest_matches_contract(
    registry: Contract, registry_domain: Domain, fields: tuple[bytes, ...]
) -> None:
    att = Attestation(*fields)
    python = eip712.digest(registry_domain, ATTESTATION_TYPES, att.message())
    assert bytes(registry.functions.hashAttestation(_att_tuple(att)).call()) == python


@settings(max_examples=25, deadline=None)
@given(worker=addresses, contributor=addresses, deadline=uint256)
def test_registration_digest_matches_contract(
    registry: Contract, registry_domain: Domain, worker: str, contributor: str, deadline: int
) -> None:
    message = eip712.registration_message(worker, contributor, deadline)
    python = eip712.digest(registry_domain, REGISTRATION_TYPES, message)
    onchain = registry.functions.hashWorkerRegistration(
        message["worker"], message["contributor"], deadline
    ).call()
    assert bytes(onchain) == python


def test_digests_are_bound_to_the_deployed_contract(
    vault: Contract, registry: Contract, vault_domain: Domain, registry_domain: Domain
) -> None:
    """The same voucher under the registry's address (or another chain) is another digest."""
    voucher = Voucher("0x" + "c3" * 20, 10**18, 1_900_000_000)
    onchain = bytes(vault.functions.hashVoucher(tuple(voucher.message().values())).call())
    wrong_contract = Domain(vault_domain.name, vault_domain.chain_id, registry.address)
    wrong_chain = Domain(vault_domain.name, vault_domain.chain_id + 1, vault.address)
    for domain in (wrong_contract, wrong_chain):
        assert eip712.digest(domain, VOUCHER_TYPES, voucher.message()) != onchain
    assert eip712.digest(vault_domain, VOUCHER_TYPES, voucher.message()) == onchain


@settings(max_examples=15, deadline=None)
@given(key=keys, fields=st.tuples(bytes32, bytes32, bytes32, bytes32, bytes32))
def test_attestation_signature_recovers_on_chain(
    registry: Contract, registry_domain: Domain, key: bytes, fields: tuple[bytes, ...]
) -> None:
    att = Attestation(*fields)
    sig = eip712.sign_attestation(registry_domain, att, key)
    python = eip712.recover_attestation(registry_domain, att, sig)
    onchain = registry.functions.recoverAttestationSigner(_att_tuple(att), sig).call()
    assert onchain == python == Account.from_key(key).address


def _signed_attestation(registry_domain: Domain) -> tuple[Attestation, bytes]:
    parts = [hashlib.sha256(f"onchain/{i}".encode()).digest() for i in range(5)]
    att = Attestation(*parts)
    key = hashlib.sha256(b"onchain key").digest()
    return att, eip712.sign_attestation(registry_domain, att, key)


def test_high_s_is_refused_on_both_sides(registry: Contract, registry_domain: Domain) -> None:
    att, sig = _signed_attestation(registry_domain)
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(SignatureError):
        eip712.recover_attestation(registry_domain, att, flipped)
    with pytest.raises(ContractLogicError):
        registry.functions.recoverAttestationSigner(_att_tuple(att), flipped).call()


@pytest.mark.parametrize("bad", ["short", "long", "v=1", "v=29", "r=0", "s=0", "r=n"])
def test_malformed_signatures_are_refused_on_both_sides(
    registry: Contract, registry_domain: Domain, bad: str
) -> None:
    att, sig = _signed_attestation(registry_domain)
    malformed = {
        "short": sig[:64],
        "long": sig + b"\x00",
        "v=1": sig[:64] + b"\x01",
        "v=29": sig[:64] + b"\x1d",
        "r=0": bytes(32) + sig[32:],
        "s=0": sig[:32] + bytes(32) + sig[64:],
        "r=n": SECP256K1_N.to_bytes(32, "big") + sig[32:],
    }[bad]
    with pytest.raises(SignatureError):
        eip712.recover_attestation(registry_domain, att, malformed)
    with pytest.raises(ContractLogicError):
        registry.functions.recoverAttestationSigner(_att_tuple(att), malformed).call()


def test_job_id_formula_matches_abi_encode_on_chain(chain: Any, vault: Contract) -> None:
    """job_id = keccak256(abi.encode(vault, client, cumulativeAmount)), as Solidity computes it:
    the same three words hashed by the node's ``web3_sha3`` over ``abi.encode``'s bytes."""
    client = "0x" + "c3" * 20
    amount = 2**200 + 7
    encoded = abi_encode(["address", "address", "uint256"], [vault.address, client, amount])
    assert len(encoded) == 96
    node_hash = bytes.fromhex(
        str(chain.w3.manager.request_blocking("web3_sha3", ["0x" + encoded.hex()]))[2:]
    )
    assert eip712.job_id(vault.address, client, amount) == node_hash
