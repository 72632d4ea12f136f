"""Every dependency as an ``Annotated[..., Depends()]`` alias."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header, Query
from sqlmodel import Session

from ledger.auth import authenticate_worker
from ledger.config import get_settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import Unauthorized
from ledger.models import Worker


@lru_cache(maxsize=1)
def _context() -> Context:
    return Context(get_settings())


async def get_context() -> Context:
    """This process's context. Async so that resolving it costs no trip to a thread."""
    return _context()


def get_session(ctx: Annotated[Context, Depends(get_context)]) -> Iterator[Session]:
    with session_scope(ctx.engine) as session:
        yield session


ContextDep = Annotated[Context, Depends(get_context)]
# a long poll's wait in seconds (each route caps it at ``wait_max_s``)
WaitS = Annotated[float, Query(ge=0.0, le=60.0)]
# scope="function": the unit of work commits before the response is sent, so a client never
# sees an answer (a sign-in nonce, a job id) that is not yet durable and visible to others.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def signed_in_worker(session: Session, authorization: str) -> Worker:
    """The worker an ``Authorization: Bearer`` header names (one query), or Unauthorized."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("an Authorization: Bearer token is required")
    row, worker = authenticate_worker(session, token)  # one query for both
    if row.role != "worker" or worker is None:
        raise Unauthorized("this token is not a worker's")
    return worker


def get_signed_in_worker(
    session: SessionDep, authorization: Annotated[str, Header()] = ""
) -> Worker:
    return signed_in_worker(session, authorization)


async def get_current_worker(
    worker: Annotated[Worker, Depends(get_signed_in_worker)], ctx: ContextDep
) -> Worker:
    """The signed-in worker, within its key's rate limit."""
    ctx.worker_limits.take(worker.address)
    return worker


CurrentWorker = Annotated[Worker, Depends(get_current_worker)]
