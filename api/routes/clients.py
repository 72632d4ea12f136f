"""Client routes: models and prices, paid jobs, results with their receipts, balances."""

from __future__ import annotations

import json
import threading
import time

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import bindparam
from sqlmodel import Session, col, select
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from api.deps import ContextDep, SessionDep, WaitS
from api.lean import Handover, LeanRoute, app_context, json_content, read_body, wait_param
from api.schemas import (
    ChainPublic,
    ClientPublic,
    JobCreate,
    JobPublic,
    ModelPublic,
    TextInputPublic,
    Vote,
)
from ledger import journal, notify
from ledger.auth import checked_address
from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import NotFound
from ledger.jobs import JobRequest, JobRow, prepare
from ledger.models import Assignment, AssignmentStatus, Client, Job, JobStatus
from protocol.manifest import Manifest

router = APIRouter(prefix="/v1", tags=["clients"])
DECIDED = (JobStatus.ACCEPTED, JobStatus.FAILED)


def model_public(m: Manifest) -> ModelPublic:
    text = m.text
    return ModelPublic(
        model_hash="0x" + m.sha256,
        name=m.name,
        version=m.version,
        input_kind=m.input_kind,
        inputs=[s.public() for s in m.inputs],
        outputs=[s.public() for s in m.outputs],
        dims={d.name: {"min": d.min, "max": d.max} for d in m.dims},
        text=TextInputPublic(
            max_chars=text.max_chars,
            max_tokens=text.max_tokens,
            tokenizer_sha256="0x" + text.tokenizer_sha256,
        )
        if text is not None
        else None,
        max_batch_rows=m.max_batch_rows,
        price_per_row_wei=str(m.price_per_row_wei),
        tolerance_abs=m.tolerance_abs,
        batch_invariant=m.batch_invariant,
    )


@router.get("/models", response_model=list[ModelPublic])
def models(ctx: ContextDep) -> list[ModelPublic]:
    return [model_public(m) for m in ctx.models.values()]


@router.get("/chain", response_model=ChainPublic)
def chain(ctx: ContextDep) -> ChainPublic:
    d = ctx.deployment
    return ChainPublic(
        chain_id=d.chain_id,
        token=d.token,
        vault=d.vault,
        registry=d.registry,
        settlement=d.settlement,
    )


_VOTES_SHOWN = (  # built once: every decided job a client waited for is shown with them
    select(Assignment)
    .where(col(Assignment.job_id) == bindparam("job_id"))
    .where(col(Assignment.status) == AssignmentStatus.SUBMITTED)
    .order_by(col(Assignment.worker))
)


def job_public(session: Session | None, job: Job | JobRow) -> JobPublic:
    """The job as the API shows it; ``session`` is read only for a decided job's votes."""
    decided = job.status in DECIDED
    votes = (
        session.execute(_VOTES_SHOWN, {"job_id": job.id}).scalars().all()
        if decided and session is not None
        else []
    )
    return JobPublic(
        job_id=job.id,
        status=job.status,
        client=job.client,
        model_hash=job.model_hash,
        input_hash=job.input_hash,
        rows=job.rows,
        price_wei=str(job.price_wei),
        voucher_cumulative_wei=str(job.voucher_cumulative_wei),
        result_hash=job.result_hash,
        fingerprint=job.fingerprint,
        outputs=json.loads(job.outputs_json) if job.outputs_json else None,
        failure=job.failure,
        epoch=job.epoch,
        attestations=[
            Vote(
                worker=v.worker,
                contributor=v.contributor,
                result_hash=v.result_hash or "",
                fingerprint=v.fingerprint or "",
                fingerprint_info=json.loads(v.fingerprint_json or "{}"),
                signature=v.signature or "",
            )
            for v in votes
        ]
        if decided
        else [],
    )


@router.post("/jobs", response_model=JobPublic, status_code=202)
async def submit_job(
    body: JobCreate, ctx: ContextDep, response: Response, wait_s: WaitS = 0.0
) -> JobPublic:
    """Check the request on this thread, then admit it with the others arriving meanwhile
    (``ledger.ingest``: one unit of work for many requests); answered once committed, 202
    (200: a retry of a job already admitted). Each client (the voucher's signer) has a rate
    limit (``ledger.ratelimit``): past it, 429. With ``wait_s`` the answer waits, as
    ``GET /v1/jobs/{id}?wait_s=`` does, until the job is decided (200) or the wait runs out
    (202): one exchange for a client that sends one request at a time."""
    job, status = await _submit(ctx, body, wait_s)
    response.status_code = status
    return job


async def _submit(ctx: Context, body: JobCreate, wait_s: float = 0.0) -> tuple[JobPublic, int]:
    req = JobRequest(
        model_hash=body.model,
        inputs=body.inputs,
        client=body.voucher.client,
        cumulative_amount_wei=int(body.voucher.cumulative_amount_wei),
        expiry=body.voucher.expiry,
        signature=body.signature,
        texts=tuple(body.texts) if body.texts is not None else None,
    )
    prepared = prepare(ctx, req)  # CPU: the voucher's signature is checked here
    ctx.client_limits.take(prepared.req.client)  # a signed voucher's client: others cannot drain it
    if wait_s > 0:
        # watched before it is admitted: a decision committed at any time after is heard, so
        # a job this request created is not read again until its decision wakes the wait
        redis_url = ctx.settings.redis_url
        with notify.watch(redis_url, notify.DECIDED, prepared.job_id, wait=True) as woken:
            job, created = await ctx.ingest.submit_async(prepared)
            public = await run_in_threadpool(_when_decided, ctx, job.id, wait_s, woken, created)
        return public, 200 if public.status in DECIDED or not created else 202
    job, created = await ctx.ingest.submit_async(prepared)  # then no thread
    if created:
        return job_public(None, job), 202
    # a retry of a job already made
    return await run_in_threadpool(_stored_job_public, ctx, job), 200


def lean_submit_route() -> Route:
    """``POST /v1/jobs`` as a lean route (``api.lean``): dependency solving and validation
    through ``jsonable_encoder`` were most of the route's CPU. The body is validated with
    the same ``JobCreate`` in the same (Python) mode and admitted by the same ``_submit``."""

    async def submit_job_lean(request: Request) -> StarletteResponse:
        body = await read_body(request)
        try:
            if not json_content(request.headers.get("content-type")):
                raise ValueError("not JSON")
            job_in = JobCreate.model_validate(json.loads(body))
            wait_s = wait_param(request.query_params.get("wait_s"))
        except (ValueError, ValidationError, RecursionError):  # JSONDecodeError, UnicodeError
            return Handover(request.app.router, body)
        job, status = await _submit(await app_context(request.app), job_in, wait_s)
        return StarletteResponse(
            job.model_dump_json(), status_code=status, media_type="application/json"
        )

    return LeanRoute("/v1/jobs", submit_job_lean, "POST")


def _stored_job_public(ctx: Context, job: Job | JobRow) -> JobPublic:
    with session_scope(ctx.engine) as session:
        return job_public(session, job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, ctx: ContextDep, wait_s: WaitS = 0.0) -> JobPublic:
    """The job, its result and the signed attestations behind it. ``wait_s`` long-polls
    until the job is decided or the wait runs out: woken by the decision's commit in
    whichever process made it (``ledger.notify``), reading again at least every 0.25 s."""
    return _when_decided(ctx, job_id, wait_s)


def _when_decided(
    ctx: Context,
    job_id: str,
    wait_s: float,
    woken: threading.Event | None = None,
    pending: bool = False,
) -> JobPublic:
    """The job once decided, or as it is when ``wait_s`` (at most ``wait_max_s``) runs out.
    ``woken``: a watch of the job's decision the caller holds; ``pending``: the caller knows
    the job undecided as of a moment after that watch began (it admitted the job), so the
    first read waits for the wake-up (or the fallback's period)."""
    deadline = time.monotonic() + min(wait_s, ctx.settings.wait_max_s)
    job_id = job_id.lower()
    if woken is not None:
        return _read_when_decided(ctx, job_id, deadline, woken, pending)
    with notify.watch(ctx.settings.redis_url, notify.DECIDED, job_id, wait=wait_s > 0) as woken:
        return _read_when_decided(ctx, job_id, deadline, woken, False)


def _read_when_decided(
    ctx: Context, job_id: str, deadline: float, woken: threading.Event, pending: bool
) -> JobPublic:
    while True:
        if pending:
            pending = False
        else:
            with session_scope(ctx.engine) as session:
                job = session.get(Job, job_id)
                if job is None:
                    raise NotFound(f"no job {job_id}")
                if job.status in DECIDED or time.monotonic() >= deadline:
                    return job_public(session, job)
        notify.wait(woken, deadline)


@router.get("/clients/{address}", response_model=ClientPublic)
def client_balance(address: str, session: SessionDep) -> ClientPublic:
    address = checked_address(address)
    client = session.get(Client, address) or Client(address=address)
    available = journal.balance(session, journal.client_account(address))
    open_jobs = session.exec(
        select(Job).where(
            Job.client == address, col(Job.status).in_([JobStatus.PENDING, JobStatus.SUBMITTED])
        )
    ).all()
    held = sum(j.price_wei for j in open_jobs)
    return ClientPublic(
        address=address,
        deposited_wei=str(client.deposited_wei),
        available_wei=str(available),
        held_wei=str(held),
        charged_wei=str(client.deposited_wei - available - held),
        max_voucher_wei=str(client.max_voucher_wei),
    )
