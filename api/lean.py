"""Lean routes: the hot paths (a client's paid job, a worker's pull and submission) answered
without FastAPI's per-request machinery (dependency solving, parameter and body validation
through its models, a trip to a thread for each synchronous dependency), which cost more
CPU than the work of a small request.

A lean route sits in front of its FastAPI route, inside the same middleware (body limit)
and exception handlers, so a domain error (``LedgerError``) is answered the same. It parses
what it can read the common way (the same pydantic model in the same mode, plain decimal
query parameters); anything else is handed, as received, to the FastAPI route
(``Handover``), whose answer is what the client gets, word for word: the edge cases and the
schema (OpenAPI) stay that route's. Tests compare the two answers
(tests/api/test_api_jobs.py, tests/api/test_api_work.py).
"""

from __future__ import annotations

import inspect
import re
from typing import cast

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_context
from ledger.context import Context

_HANDED_OVER = "inferledger.handed_over"
_PLAIN_INT = re.compile(r"[0-9]{1,9}")


class LeanRoute(Route):
    """Not in the schema; out of the way once a request is handed over."""

    def __init__(self, path: str, endpoint: object, method: str) -> None:
        super().__init__(path, endpoint, methods=[method], include_in_schema=False)  # type: ignore[arg-type]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_HANDED_OVER):  # the router looks again and finds the FastAPI route
            return Match.NONE, {}
        return super().matches(scope)


class Handover(Response):
    """Answers by routing the request again, past the lean route, with the body already
    read."""

    def __init__(self, router: ASGIApp, body: bytes = b"") -> None:
        super().__init__()
        self.router, self.body_read = router, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": self.body_read, "more_body": False}

        await self.router({**scope, _HANDED_OVER: True}, replay, send)


async def read_body(request: Request) -> bytes:
    try:
        return await request.body()
    except HTTPException:  # over the body limit (413)
        raise
    except Exception as exc:  # as FastAPI answers a body it cannot read (a disconnect)
        raise HTTPException(400, "There was an error parsing the body") from exc


def wait_param(raw: str | None) -> float:
    """``wait_s`` as the FastAPI routes read it (``api.deps.WaitS``); ValueError where they
    would answer 422."""
    if raw is None:
        return 0.0
    value = float(raw)
    if not 0.0 <= value <= 60.0:  # also NaN
        raise ValueError("wait_s out of range")
    return value


def int_param(raw: str | None, default: int, minimum: int) -> int:
    """A plain decimal integer query parameter of at least ``minimum``; ValueError for
    anything else (FastAPI's route then judges it)."""
    if raw is None:
        return default
    if not _PLAIN_INT.fullmatch(raw) or int(raw) < minimum:
        raise ValueError("not a plain integer in range")
    return int(raw)


def json_content(content_type: str | None) -> bool:
    """As FastAPI reads a body as JSON: a ``json`` subtype."""
    if not content_type:  # FastAPI's strict_content_type (its default) reads no JSON then
        return False
    kind = content_type.partition(";")[0].strip().lower()
    main, _, sub = kind.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def app_context(app: FastAPI) -> Context:
    """This process's context, or the one a test put in ``dependency_overrides``."""
    override = app.dependency_overrides.get(get_context)
    if override is None:
        return await get_context()
    found = override()
    return cast(Context, await found if inspect.isawaitable(found) else found)
