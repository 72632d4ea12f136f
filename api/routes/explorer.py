"""Explorer routes: HTML pages for auditors, contributors and clients under ``/explorer``
(epochs, jobs, contributors, clients, and charts drawn on the server). Public, read-only,
no script and nothing fetched from elsewhere; left out of the OpenAPI schema, which
describes the JSON API. An unknown id answers a 404 page (docs/explorer.md)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import select

from api.deps import ContextDep, SessionDep
from api.explorer import epochs, people
from api.explorer.html import not_found, path
from ledger.auth import checked_address
from ledger.errors import InvalidRequest, NotFound
from ledger.models import Worker

router = APIRouter(prefix="/explorer", tags=["explorer"], include_in_schema=False)

HEX = frozenset("0123456789abcdefABCDEF")


def _answer(build: Callable[[], HTMLResponse]) -> HTMLResponse:
    """The page, or a 404 page saying what was not found (a malformed id included)."""
    try:
        return build()
    except (NotFound, InvalidRequest) as exc:
        return not_found(exc.detail)


@router.get("", response_class=HTMLResponse)
def home(session: SessionDep) -> HTMLResponse:
    return epochs.home(session)


@router.get("/epochs/{number}", response_class=HTMLResponse)
def epoch(number: str, session: SessionDep, ctx: ContextDep) -> HTMLResponse:
    if not number.isdecimal() or len(number) > 18:
        return not_found(f"There is no epoch {number}.")
    return _answer(lambda: epochs.epoch(session, ctx, int(number)))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(job_id: str, session: SessionDep, ctx: ContextDep) -> HTMLResponse:
    return _answer(lambda: epochs.job(session, ctx, job_id))


@router.get("/contributors/{address}", response_class=HTMLResponse)
def contributor(address: str, session: SessionDep, ctx: ContextDep) -> HTMLResponse:
    return _answer(lambda: people.contributor(session, ctx, checked_address(address)))


@router.get("/clients/{address}", response_class=HTMLResponse)
def client(address: str, session: SessionDep, ctx: ContextDep) -> HTMLResponse:
    return _answer(lambda: people.client(session, ctx, checked_address(address)))


@router.get("/search")
def search(session: SessionDep, q: str = "") -> Response:
    """The header's search box: an epoch number, a job id, or an address (a contributor's
    page when a device signed in under it, else a client's)."""
    q = q.strip()
    if q.isdecimal() and len(q) <= 18:
        return RedirectResponse(path("epochs", int(q)), status_code=303)
    if q[:2].lower() == "0x" and set(q[2:]) <= HEX:
        if len(q) == 66:
            return RedirectResponse(path("jobs", q.lower()), status_code=303)
        if len(q) == 42:
            owner = checked_address(q)
            found = session.exec(select(Worker).where(Worker.contributor == owner)).first()
            kind = "contributors" if found is not None else "clients"
            return RedirectResponse(path(kind, owner), status_code=303)
    return not_found(f"Nothing is named {q!r}: try an epoch number, a job id or an address.")


@router.get("/{rest:path}", response_class=HTMLResponse)
def unknown(rest: str) -> Response:
    """Any other path under /explorer (an id with a slash in it, say): a 404 page too."""
    if not rest:
        return RedirectResponse("/explorer", status_code=308)
    return not_found(f"There is no page /explorer/{rest}.")
