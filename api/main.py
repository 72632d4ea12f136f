"""The FastAPI application: ``uvicorn api.main:app``."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api import errors
from api.limits import BodyLimitMiddleware
from api.routes import audit, auth, clients, contributors, explorer, workers
from api.schemas import ERROR_RESPONSES
from ledger.config import get_settings
from ledger.runtime import tune_gc
from protocol import recursion

logger = logging.getLogger(__name__)


def create_app(*, lean: bool = True) -> FastAPI:
    """``lean=False`` leaves the hot paths (``POST /v1/jobs``, ``GET /v1/work``,
    ``POST /v1/work/results``) to their FastAPI routes alone (tests compare the two)."""
    settings = get_settings()
    app = FastAPI(
        title="inferledger",
        version="0.1.0",
        description="Pay per inference, verified by redundant runs on contributors' devices.",
    )
    errors.install(app)
    app.include_router(auth.router, responses=ERROR_RESPONSES)
    app.include_router(clients.router, responses=ERROR_RESPONSES)
    app.include_router(workers.router, responses=ERROR_RESPONSES)
    app.include_router(contributors.router, responses=ERROR_RESPONSES)
    app.include_router(audit.router, responses=ERROR_RESPONSES)
    app.include_router(explorer.router)
    if lean:  # the hot paths, answered in front of their FastAPI routes (api/lean.py)
        app.router.routes[0:0] = [clients.lean_submit_route(), *workers.lean_work_routes()]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


app = create_app()
recursion.bound()  # json.loads of a deeply nested body: an error, not a crash
tune_gc()  # each API process, once the app and its imports are built
