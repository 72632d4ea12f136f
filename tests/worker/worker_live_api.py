"""The real API for the agent's tests, over HTTP: ``tests/api/api_harness.py``'s API (its
own contracts on the shared Hardhat node, a fresh SQLite database, three contributors with
staked, registered device keys) served by uvicorn on a free port in a thread. It can be
stopped and started again on the same port: an API that goes away and comes back."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_harness import ApiEnv, Contributor, api_env, own_celery_queue, samples  # noqa: E402

from inferledger.procs import free_port  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.models import Assignment, Job, Worker  # noqa: E402

__all__ = [
    "LiveApi",
    "api_env_for_agents",
    "own_celery_queue",
    "samples",
    "wait_for",
    "write_key_file",
]


@contextmanager
def api_env_for_agents(chain: Any, data_dir: Path) -> Iterator[ApiEnv]:
    """A fresh API (contracts, database, deposit, three contributors) whose device keys have
    signed in once, so that jobs can be assigned before any agent runs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with api_env(chain.w3, chain.rpc_url, chain.keys, data_dir) as env:
        env.sign_in_all()
        yield env


class LiveApi:
    def __init__(self, env: ApiEnv) -> None:
        self.env = env
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveApi:
        config = uvicorn.Config(
            self.env.http.app, host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=20)
            assert not self._thread.is_alive(), "uvicorn did not stop"
        self._server = self._thread = None

    # --- reading the ledger -------------------------------------------------------------

    def assignments(self, job_ids: list[str]) -> list[Assignment]:
        with session_scope(self.env.ctx.engine) as session:
            rows = session.exec(
                select(Assignment).where(Assignment.job_id.in_(job_ids))  # type: ignore[attr-defined]
            ).all()
            session.expunge_all()
            return list(rows)

    def job_statuses(self, job_ids: list[str]) -> dict[str, str]:
        with session_scope(self.env.ctx.engine) as session:
            return {
                j.id: j.status
                for j in session.exec(select(Job).where(Job.id.in_(job_ids))).all()  # type: ignore[attr-defined]
            }

    def faults(self, c: Contributor) -> tuple[int, int]:
        with session_scope(self.env.ctx.engine) as session:
            worker = session.get(Worker, c.worker)
            assert worker is not None
            return worker.safety_faults, worker.liveness_faults


def write_key_file(c: Contributor, directory: Path) -> Path:
    """The contributor's device key as a dev key file (mode 0600)."""
    path = directory / f"device-{c.worker}.json"
    payload: dict[str, Any] = {"address": c.worker, "private_key": "0x" + bytes(c.device.key).hex()}
    path.write_text(json.dumps(payload))
    path.chmod(0o600)
    return path


def wait_for(what: str, check: Any, timeout_s: float = 60.0, agents: Any = ()) -> None:
    """Poll ``check()`` until it is true, or fail naming ``what``; fails at once when one of
    ``agents`` (``Running``) has stopped with an error."""
    deadline = time.monotonic() + timeout_s
    while not check():
        for running in agents:
            if isinstance(running.result, BaseException):
                raise AssertionError(f"an agent failed while waiting for {what}") from (
                    running.result
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
