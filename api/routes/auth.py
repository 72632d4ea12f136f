"""Sign in with a wallet signature for a short-lived bearer token."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ContextDep, SessionDep
from api.schemas import ChallengePublic, ChallengeRequest, TokenPublic, TokenRequest
from ledger import auth

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/challenge", response_model=ChallengePublic)
def challenge(body: ChallengeRequest, session: SessionDep, ctx: ContextDep) -> ChallengePublic:
    row = auth.issue_challenge(session, ctx, body.address)
    return ChallengePublic(nonce=row.nonce, message=row.message, expires_at=row.expires_at)


@router.post("/token", response_model=TokenPublic)
def token(body: TokenRequest, session: SessionDep, ctx: ContextDep) -> TokenPublic:
    raw, row, contributor = auth.issue_token(session, ctx, body.address, body.nonce, body.signature)
    return TokenPublic(token=raw, expires_at=row.expires_at, role=row.role, contributor=contributor)
