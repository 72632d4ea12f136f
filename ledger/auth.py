"""Sign-in with a wallet signature (in the manner of EIP-4361): the API issues a single-use
nonce inside a message naming its domain, the address, the chain id and an expiry; the key
signs it (EIP-191); the API checks all of it and returns a short-lived bearer token, stored
only as its sha256."""

from __future__ import annotations

import hashlib
import secrets
import time
from functools import lru_cache

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from ledger.context import Context
from ledger.errors import InvalidRequest, Unauthorized
from ledger.models import AuthChallenge, AuthToken, Worker
from protocol.eip712 import to_checksum_address

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def checked_address(value: str) -> str:
    """The EIP-55 form of an address given in any case; a clear error otherwise."""
    if not isinstance(value, str) or len(value) != 42 or not _is_address(value):
        raise InvalidRequest(f"{value!r} is not an address", code="invalid_address")
    return to_checksum_address(value)


@lru_cache(maxsize=1 << 16)  # only ever given 42 characters: a bounded cache
def _is_address(value: str) -> bool:
    return bool(is_address(value))


def issue_challenge(session: Session, ctx: Context, address: str) -> AuthChallenge:
    address = checked_address(address)
    nonce = secrets.token_hex(16)
    expires_at = int(time.time()) + ctx.settings.auth_challenge_ttl_s
    message = (
        f"{ctx.settings.api_domain} wants you to sign in with your Ethereum account:\n"
        f"{address}\n\nSign in to inferledger as a worker.\n\n"
        f"URI: https://{ctx.settings.api_domain}\nVersion: 1\n"
        f"Chain ID: {ctx.deployment.chain_id}\nNonce: {nonce}\nExpiration Time: {expires_at}"
    )
    challenge = AuthChallenge(nonce=nonce, address=address, message=message, expires_at=expires_at)
    session.add(challenge)
    return challenge


def _recover(message: str, signature: str) -> str:
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        return str(Account.recover_message(encode_defunct(text=message), signature=raw))
    except Exception as exc:  # malformed hex, length or curve point
        raise Unauthorized("the signature does not parse", reason="bad_signature") from exc


def _field(message: str, name: str) -> str:
    """The value of the line ``name: value`` of a sign-in message; "" if there is none."""
    prefix = name + ": "
    return next((ln[len(prefix) :] for ln in message.splitlines() if ln.startswith(prefix)), "")


def check_message(ctx: Context, message: str, nonce: str, now: int) -> None:
    """The signed message itself must name this API's domain and chain, the nonce and an
    expiry still ahead: a message issued elsewhere (another deployment sharing the database,
    a domain or chain since changed) signs in nowhere else."""
    domain = message.partition(" wants you to sign in")[0]
    if domain != ctx.settings.api_domain or _field(message, "URI") != f"https://{domain}":
        raise Unauthorized(
            f"the sign-in message names another domain than {ctx.settings.api_domain}",
            reason="wrong_domain",
        )
    if _field(message, "Chain ID") != str(ctx.deployment.chain_id):
        raise Unauthorized(
            f"the sign-in message names another chain than {ctx.deployment.chain_id}",
            reason="wrong_chain",
        )
    if _field(message, "Nonce") != nonce:
        raise Unauthorized("the sign-in message names another nonce", reason="bad_nonce")
    expires = _field(message, "Expiration Time")
    if not expires.isdigit() or int(expires) < now:
        raise Unauthorized("the sign-in message has expired", reason="expired")


def issue_token(
    session: Session, ctx: Context, address: str, nonce: str, signature: str
) -> tuple[str, AuthToken, str]:
    """Return (token, its row, contributor) for a registered worker key."""
    address = checked_address(address)
    challenge = session.get(AuthChallenge, nonce)
    now = int(time.time())
    if challenge is None or challenge.used or challenge.address != address:
        raise Unauthorized("unknown or used sign-in nonce", reason="bad_nonce")
    if challenge.expires_at < now:
        raise Unauthorized("the sign-in message has expired", reason="expired")
    check_message(ctx, challenge.message, nonce, now)
    if _recover(challenge.message, signature) != address:
        raise Unauthorized("the sign-in message was signed by another key", reason="wrong_signer")
    challenge.used = True
    session.add(challenge)
    contributor = ctx.chain.call(ctx.chain.registry.functions.workerOwner(address), "workerOwner")
    if contributor == ZERO_ADDRESS:
        raise Unauthorized(
            f"{address} is not a worker registered on chain", reason="not_registered"
        )
    eligible = bool(ctx.chain.call(ctx.chain.registry.functions.isEligible(address), "isEligible"))
    worker = session.get(Worker, address) or Worker(address=address, contributor=contributor)
    worker.contributor, worker.eligible = str(contributor), eligible
    worker.checked_at = worker.last_seen = time.time()
    session.add(worker)
    token = secrets.token_urlsafe(32)
    row = AuthToken(
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        address=address,
        role="worker",
        expires_at=now + ctx.settings.auth_token_ttl_s,
    )
    session.add(row)
    return token, row, str(contributor)


def authenticate(session: Session, token: str) -> AuthToken:
    return authenticate_worker(session, token)[0]


_TOKEN_AND_WORKER = (  # built once: every worker request runs it
    select(AuthToken, Worker)
    .outerjoin(Worker, col(Worker.address) == col(AuthToken.address))
    .where(col(AuthToken.token_hash) == bindparam("token_hash"))
)


def authenticate_worker(session: Session, token: str) -> tuple[AuthToken, Worker | None]:
    """The token's row and the worker it names (None if none), read by one query."""
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    found = session.execute(_TOKEN_AND_WORKER, {"token_hash": token_hash}).first()
    if found is None or found[0].expires_at < int(time.time()):
        raise Unauthorized("missing, unknown or expired token", reason="bad_token")
    return found[0], found[1]
