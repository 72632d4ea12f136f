"""Worker routes: pull assignments in batches, submit signed results in batches, hand back
assignments, heartbeats, and the worker's earnings not yet claimable."""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.deps import ContextDep, CurrentWorker, SessionDep, WaitS
from api.schemas import WorkResult
from ledger import notify
from ledger.context import Context
from ledger.earnings import pending_of
from ledger.errors import InvalidRequest
from ledger.models import Worker
from ledger.reconcile import decide_now
from ledger.work import Delivery, deliver, heartbeat, release, submit

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/work", tags=["workers"])

JobId = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]


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
    max: int = Query(16, ge=1),
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
    as ``GET /v1/work?max=&wait_s=`` would, once the results are committed: an agent that
    has answered everything it held submits and waits for work in one exchange."""
    if len(body.results) > ctx.settings.submit_batch_max:
        raise InvalidRequest(
            f"at most {ctx.settings.submit_batch_max} results per batch", code="batch_too_large"
        )
    results, ready = submit(session, ctx, worker, body.results)
    if ready and not decide_now(session, ctx, ready):
        session.commit()  # the reconcile task must see these submissions
        try:
            from ledger.celery_app import app as celery_app

            celery_app.send_task("ledger.tasks.reconcile")
        except Exception:  # the beat sweep reconciles them anyway
            logger.warning("could not enqueue reconcile; the periodic sweep will pick the jobs up")
    answer = json.dumps({"results": results})
    if max > 0:
        session.commit()  # the results count (and wake their clients) before any wait
        answer = answer[:-1] + ',"assignments":' + _pulled(session, ctx, worker, max, wait_s) + "}"
    return Response(answer, media_type="application/json")


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
