"""Worker routes: pull assignments in batches, submit signed results in batches."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query

from api.deps import ContextDep, CurrentWorker, SessionDep
from api.schemas import WorkResult
from ledger.errors import InvalidRequest
from ledger.work import pull, submit

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/work", tags=["workers"])


@router.get("")
def get_work(
    worker: CurrentWorker, session: SessionDep, ctx: ContextDep, max: int = Query(16, ge=1)
) -> dict[str, object]:
    return {"assignments": pull(session, ctx, worker, min(max, ctx.settings.pull_batch_max))}


@router.post("/results", response_model=WorkResult)
def post_results(
    body: WorkResult, worker: CurrentWorker, session: SessionDep, ctx: ContextDep
) -> WorkResult:
    if len(body.results) > ctx.settings.submit_batch_max:
        raise InvalidRequest(
            f"at most {ctx.settings.submit_batch_max} results per batch", code="batch_too_large"
        )
    results, ready = submit(session, ctx, worker, body.results)
    if ready:
        session.commit()  # the reconcile task must see these submissions
        try:
            from ledger.celery_app import app as celery_app

            celery_app.send_task("ledger.tasks.reconcile")
        except Exception:  # the beat sweep reconciles them anyway
            logger.warning("could not enqueue reconcile; the periodic sweep will pick the jobs up")
    return WorkResult(results=results)
