"""Sign-in with a wallet signature: challenge, EIP-191 signature, bearer token; and every way
it is refused (401 ``unauthorized``, nothing issued)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_harness import ApiEnv
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from sqlmodel import select

from ledger.db import session_scope
from ledger.models import AuthChallenge, AuthToken

API_SETTINGS = {"auth_challenge_ttl_s": 10}


def _sign(account: LocalAccount, message: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()


def _token(env: ApiEnv, address: str, nonce: str, signature: str) -> Any:
    return env.http.post(
        "/v1/auth/token", json={"address": address, "nonce": nonce, "signature": signature}
    )


def _tokens_of(env: ApiEnv, address: str) -> int:
    with session_scope(env.ctx.engine) as session:
        return len(session.exec(select(AuthToken).where(AuthToken.address == address)).all())


def _assert_unauthorized(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


def test_challenge_names_the_address_chain_and_nonce(env: ApiEnv) -> None:
    device = env.contributors[0].device
    ch = env.challenge(device.address.lower())
    assert device.address in ch["message"]  # checksummed
    assert f"Chain ID: {env.deployment.chain_id}" in ch["message"]
    assert f"Nonce: {ch['nonce']}" in ch["message"]
    assert int(time.time()) < ch["expires_at"] <= int(time.time()) + 10


def test_sign_in_gives_a_token_that_works_on_work(env: ApiEnv) -> None:
    c = env.contributors[0]
    ch = env.challenge(c.worker)
    r = _token(env, c.worker, ch["nonce"], _sign(c.device, ch["message"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["role"] == "worker"
    assert body["contributor"] == c.address
    assert body["expires_at"] > time.time()
    work = env.http.get("/v1/work", headers={"Authorization": f"Bearer {body['token']}"})
    assert work.status_code == 200, work.text
    assert work.json() == {"assignments": []}
    # the scheme is case-insensitive
    assert (
        env.http.get("/v1/work", headers={"Authorization": f"bearer {body['token']}"}).status_code
        == 200
    )


def test_a_nonce_signs_in_once(env: ApiEnv) -> None:
    c = env.contributors[1]
    ch = env.challenge(c.worker)
    sig = _sign(c.device, ch["message"])
    assert _token(env, c.worker, ch["nonce"], sig).status_code == 200
    before = _tokens_of(env, c.worker)
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], sig))
    assert _tokens_of(env, c.worker) == before


def test_a_signature_by_another_key_is_refused(env: ApiEnv) -> None:
    c, other = env.contributors[0], env.contributors[1]
    ch = env.challenge(c.worker)
    before = _tokens_of(env, c.worker)
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], _sign(other.device, ch["message"])))
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], _sign(Account.create(), ch["message"])))
    assert _tokens_of(env, c.worker) == before


def test_a_signature_of_another_message_is_refused(env: ApiEnv) -> None:
    c = env.contributors[0]
    ch = env.challenge(c.worker)
    forged = ch["message"].replace("Chain ID: ", "Chain ID: 1")
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], _sign(c.device, forged)))


def test_a_nonce_issued_to_another_address_is_refused(env: ApiEnv) -> None:
    c, other = env.contributors[0], env.contributors[1]
    ch = env.challenge(other.worker)
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], _sign(c.device, ch["message"])))


def test_an_unknown_nonce_is_refused(env: ApiEnv) -> None:
    c = env.contributors[0]
    _assert_unauthorized(_token(env, c.worker, "00" * 16, _sign(c.device, "anything")))


def test_an_expired_challenge_is_refused(env: ApiEnv) -> None:
    c = env.contributors[2]
    ch = env.challenge(c.worker)
    with session_scope(env.ctx.engine) as session:
        row = session.get(AuthChallenge, ch["nonce"])
        assert row is not None
        row.expires_at = int(time.time()) - 1
        session.add(row)
    before = _tokens_of(env, c.worker)
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], _sign(c.device, ch["message"])))
    assert _tokens_of(env, c.worker) == before


def _tamper(env: ApiEnv, nonce: str, old: str, new: str) -> str:
    """Rewrite the stored challenge as if issued by an API of another domain or chain (one
    sharing this database): the key then signs exactly what it is shown."""
    with session_scope(env.ctx.engine) as session:
        row = session.get(AuthChallenge, nonce)
        assert row is not None and old in row.message
        row.message = row.message.replace(old, new)
        session.add(row)
        return row.message


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        ("inferledger.local", "inferledger.evil", "another domain"),
        ("https://inferledger.local", "https://inferledger.evil", "another domain"),
        ("Chain ID: ", "Chain ID: 1", "another chain"),
    ],
    ids=["domain", "uri", "chain"],
)
def test_a_message_of_another_domain_or_chain_is_refused(
    env: ApiEnv, old: str, new: str, detail: str
) -> None:
    c = env.contributors[2]
    ch = env.challenge(c.worker)
    message = _tamper(env, ch["nonce"], old, new)
    before = _tokens_of(env, c.worker)
    r = _token(env, c.worker, ch["nonce"], _sign(c.device, message))
    _assert_unauthorized(r)
    assert detail in r.json()["detail"]
    assert _tokens_of(env, c.worker) == before
    # the refusal does not spend the nonce on a message that was never this API's
    with session_scope(env.ctx.engine) as session:
        row = session.get(AuthChallenge, ch["nonce"])
        assert row is not None and not row.used


def test_an_unregistered_key_is_refused(env: ApiEnv) -> None:
    stranger = Account.create()
    ch = env.challenge(stranger.address)
    _assert_unauthorized(_token(env, stranger.address, ch["nonce"], _sign(stranger, ch["message"])))
    assert _tokens_of(env, stranger.address) == 0


@pytest.mark.parametrize(
    "signature",
    ["0x" + "00" * 65, "0x" + "ff" * 65, "0x" + "1b" * 65],
    ids=["zeros", "ones", "not-a-point"],
)
def test_a_signature_that_does_not_parse_is_refused(env: ApiEnv, signature: str) -> None:
    c = env.contributors[0]
    ch = env.challenge(c.worker)
    _assert_unauthorized(_token(env, c.worker, ch["nonce"], signature))


@pytest.mark.parametrize(
    "body",
    [
        {"address": "0x1234"},
        {"address": "not an address"},
        {},
        {"address": 42},
    ],
    ids=["short", "text", "missing", "number"],
)
def test_a_malformed_challenge_request_is_invalid_body(env: ApiEnv, body: dict[str, Any]) -> None:
    r = env.http.post("/v1/auth/challenge", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_body"


def test_a_malformed_token_request_is_invalid_body(env: ApiEnv) -> None:
    c = env.contributors[0]
    r = env.http.post(
        "/v1/auth/token", json={"address": c.worker, "nonce": "x", "signature": "0x12"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_body"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "garbage"},
    ],
    ids=["none", "scheme-only", "empty-token", "garbage-token", "basic", "no-scheme"],
)
def test_work_needs_a_valid_bearer_token(env: ApiEnv, headers: dict[str, str]) -> None:
    _assert_unauthorized(env.http.get("/v1/work", headers=headers))
    _assert_unauthorized(env.http.post("/v1/work/results", json={"results": []}, headers=headers))


def test_an_expired_token_is_refused(env: ApiEnv) -> None:
    c = env.contributors[1]
    token = env.sign_in(c.device)
    headers = {"Authorization": f"Bearer {token}"}
    assert env.http.get("/v1/work", headers=headers).status_code == 200
    with session_scope(env.ctx.engine) as session:
        for row in session.exec(select(AuthToken).where(AuthToken.address == c.worker)).all():
            row.expires_at = int(time.time()) - 1
            session.add(row)
    _assert_unauthorized(env.http.get("/v1/work", headers=headers))
