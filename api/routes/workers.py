"""Worker routes: pull assignments in batches, submit signed results in batches, hand back
assignments, heartbeats, and the worker's earnings not yet claimable."""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from api.deps import ContextDep, CurrentWorker, SessionDep, WaitS, signed_in_worker
from api.lean import (
    Handover,
    LeanRoute,
    app_context,
    int_param,
    json_content,
    read_body,
    wait_param,
)
from api.schemas import WorkResult
from ledger import notify
from ledger.context import Context
from ledger.db import session_scope
from ledger.earnings import pending_of
from ledger.errors import InvalidRequest
from ledger.models import Worker
from ledger.reconcile import decide_now
from ledger.work import Delivery, deliver, heartbeat, release, submit

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/work", tags=["workers"])

JobId = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]
PULL_DEFAULT = 16  # assignments a pull asks for when it names no ``max``


class HandBack(BaseModel):
    job_ids: list[JobId]
    reason: str = Field("", max_length=64)


class HandBackPublic(BaseModel):
    released: list[str]


class HeartbeatPublic(BaseModel):
    worker: str
    contributor: str
    eligible: bool
    in_flight: int
    seen_s: float


class EarningsPublic(BaseModel):
    worker: str
    contributor: str
    pending_wei: str
    pending_jobs: int
    posted_epoch: int


class AssignmentPublic(BaseModel):
    job_id: str
    model_hash: str
    input_hash: str
    inputs: dict[str, Any]
    deadline: int


class AssignmentsPublic(BaseModel):
    assignments: list[AssignmentPublic]


def _assignment_json(d: Delivery) -> str:
    """One assignment as JSON, the job's inputs spliced in as stored (JSON written at
    admission): not decoded and encoded again on every pull."""
    head = json.dumps({"job_id": d.job_id, "model_hash": d.model_hash, "input_hash": d.input_hash})
    return f'{head[:-1]},"inputs":{d.inputs_json},"deadline":{int(d.deadline)}}}'


@router.get("", response_model=AssignmentsPublic)
def get_work(
    worker: CurrentWorker,
    session: SessionDep,
    ctx: ContextDep,
    max: int = Query(PULL_DEFAULT, ge=1),
    wait_s: WaitS = 0.0,
) -> Response:
    """Up to ``max`` (at most ``pull_batch_max``) of this worker's open assignments, oldest
    first, each delivered again until answered. With none, ``wait_s`` long-polls: the
    answer goes as soon as an assignment for this worker commits (``ledger.notify``), or
    empty when the wait (at most ``wait_max_s``) runs out."""
    body = '{"assignments":' + _pulled(session, ctx, worker, max, wait_s) + "}"
    return Response(body, media_type="application/json")


def _pulled(session: Session, ctx: Context, worker: Worker, max: int, wait_s: float) -> str:
    """The worker's assignments as a JSON list, long-polled for up to ``wait_s``."""
    limit = min(max, ctx.settings.pull_batch_max)
    deadline = time.monotonic() + min(wait_s, ctx.settings.wait_max_s)
    address = worker.address.lower()
    with notify.watch(ctx.settings.redis_url, notify.WORK, address, wait=wait_s > 0) as woken:
        while True:
            delivered = deliver(session, ctx, worker, limit)
            if delivered or time.monotonic() >= deadline:
                break
            session.commit()  # no transaction held open while waiting
            notify.wait(woken, deadline)
    return "[" + ",".join(map(_assignment_json, delivered)) + "]"


class WorkResultPublic(BaseModel):
    results: list[dict[str, Any]]
    assignments: list[AssignmentPublic] | None = None  # asked for with ``max``


@router.post("/results", response_model=WorkResultPublic)
def post_results(
    body: WorkResult,
    worker: CurrentWorker,
    session: SessionDep,
    ctx: ContextDep,
    max: int = Query(0, ge=0),
    wait_s: WaitS = 0.0,
) -> Response:
    """Take a batch of signed results (each refused or taken on its own). A submission that
    makes jobs ready decides them (``ledger.reconcile.decide_now``), or queues them for the
    Celery reconciler. With ``max`` the answer also carries the worker's next assignments,
    as ``GET /v1/work?max=&wait_s=`` would: an agent that has answered everything it held
    submits and waits for work in one exchange. The first look for work is in the results'
    unit of work, which commits before any wait."""
    answer = _submitted(session, ctx, worker, body.results, max, wait_s)
    return Response(answer, media_type="application/json")


def _submitted(
    session: Session,
    ctx: Context,
    worker: Worker,
    items: list[dict[str, Any]],
    max: int,
    wait_s: float,
) -> str:
    """The batch taken (and decided where it completes jobs): the answer's JSON."""
    if len(items) > ctx.settings.submit_batch_max:
        raise InvalidRequest(
            f"at most {ctx.settings.submit_batch_max} results per batch", code="batch_too_large"
        )
    results, ready = submit(session, ctx, worker, items)
    if ready and not decide_now(session, ctx, ready):
        session.commit()  # the reconcile task must see these submissions
        try:
            from ledger.celery_app import app as celery_app

            celery_app.send_task("ledger.tasks.reconcile")
        except Exception:  # the beat sweep reconciles them anyway
            logger.warning("could not enqueue reconcile; the periodic sweep will pick the jobs up")
    answer = json.dumps({"results": results})
    if max > 0:  # the results commit (and wake their clients) with this first look for work
        answer = answer[:-1] + ',"assignments":' + _pulled(session, ctx, worker, max, wait_s) + "}"
    return answer


def lean_work_routes() -> list[Route]:
    """``GET /v1/work`` and ``POST /v1/work/results`` as lean routes (``api.lean``): each
    request is one trip to a thread (sign-in check, rate limit, the work, the commit) with
    the same functions as the FastAPI routes, instead of a trip per synchronous dependency
    and FastAPI's dependency solving and validation around them."""

    async def get_work_lean(request: Request) -> StarletteResponse:
        query = request.query_params
        try:
            limit = int_param(query.get("max"), PULL_DEFAULT, minimum=1)
            wait_s = wait_param(query.get("wait_s"))
        except ValueError:
            return Handover(request.app.router)
        ctx = await app_context(request.app)
        authorization = request.headers.get("authorization", "")

        def pull() -> str:
            with session_scope(ctx.engine) as session:
                worker = _lean_worker(session, ctx, authorization)
                return '{"assignments":' + _pulled(session, ctx, worker, limit, wait_s) + "}"

        return _json(await run_in_threadpool(pull))

    async def post_results_lean(request: Request) -> StarletteResponse:
        body = await read_body(request)
        query = request.query_params
        try:
            if not json_content(request.headers.get("content-type")):
                raise ValueError("not JSON")
            items = WorkResult.model_validate(json.loads(body)).results
            limit = int_param(query.get("max"), 0, minimum=0)
            wait_s = wait_param(query.get("wait_s"))
        except (ValueError, ValidationError, RecursionError):  # JSONDecodeError, UnicodeError
            return Handover(request.app.router, body)
        ctx = await app_context(request.app)
        authorization = request.headers.get("authorization", "")

        def take() -> str:
            with session_scope(ctx.engine) as session:
                worker = _lean_worker(session, ctx, authorization)
                return _submitted(session, ctx, worker, items, limit, wait_s)

        return _json(await run_in_threadpool(take))

    return [
        LeanRoute("/v1/work", get_work_lean, "GET"),
        LeanRoute("/v1/work/results", post_results_lean, "POST"),
    ]


def _lean_worker(session: Session, ctx: Context, authorization: str) -> Worker:
    """As ``api.deps.CurrentWorker``: signed in, then within its key's rate limit."""
    worker = signed_in_worker(session, authorization)
    ctx.worker_limits.take(worker.address)
    return worker


def _json(text: str) -> StarletteResponse:
    return StarletteResponse(text, media_type="application/json")


@router.post("/release", response_model=HandBackPublic)
def post_release(
    body: HandBack, worker: CurrentWorker, session: SessionDep, ctx: ContextDep
) -> HandBackPublic:
    """Hand back assignments this worker will not answer: no fault, reassigned at once."""
    if len(body.job_ids) > ctx.settings.submit_batch_max:
        raise InvalidRequest(
            f"at most {ctx.settings.submit_batch_max} job ids per batch", code="batch_too_large"
        )
    return HandBackPublic(released=release(session, ctx, worker, body.job_ids, body.reason))


@router.post("/heartbeat", response_model=HeartbeatPublic)
def post_heartbeat(worker: CurrentWorker, session: SessionDep, ctx: ContextDep) -> HeartbeatPublic:
    """The worker is alive (between pulls, or while it is busy with what it holds)."""
    in_flight = heartbeat(session, worker)
    return HeartbeatPublic(
        worker=worker.address,
        contributor=worker.contributor,
        eligible=worker.eligible,
        in_flight=in_flight,
        seen_s=ctx.settings.worker_seen_s,
    )


@router.get("/earnings", response_model=EarningsPublic)
def get_earnings(worker: CurrentWorker, session: SessionDep) -> EarningsPublic:
    """This worker's pay (to its contributor) not yet under a posted epoch root."""
    pending = pending_of(session, worker)
    return EarningsPublic(
        worker=worker.address,
        contributor=worker.contributor,
        pending_wei=str(pending.pending_wei),
        pending_jobs=pending.pending_jobs,
        posted_epoch=pending.posted_epoch,
    )
