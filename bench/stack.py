"""The whole system on this machine for ``bench/system.py``: a Hardhat node with the contracts,
contributors staked with a registered device each, the API (``api.serve``), one Celery
worker and one device agent per contributor, as separate processes, as ``make demo`` runs
them. Clients' deposits are written into the journal directly (the chain indexer would put
them there; it is not what is measured), with enough for every request of the run.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from sqlmodel import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inferledger import actors  # noqa: E402
from inferledger.demo import dev_keys  # noqa: E402
from inferledger.procs import Processes, free_port, http_ok, start_hardhat_node, wait_until  # noqa: E402
from ledger import journal  # noqa: E402
from ledger.chain.client import connect  # noqa: E402
from ledger.chain.deploy import deploy  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.context import Context  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.journal import TransferKind, TransferSpec  # noqa: E402
from ledger.models import AuthToken, Client  # noqa: E402
from protocol.contracts import Deployment  # noqa: E402

TOKEN = 10**18
ARTIFACTS = ROOT / "artifacts"


@dataclass
class StackConfig:
    data_dir: Path
    contributors: int = 2  # replication 2 needs two distinct contributors
    device_workers: int = 1  # inference processes per device agent
    replicas: int = 2
    trust_after: int = 0  # adaptive replication: off (ledger.scheduler.adaptive)
    spot_check_bps: int = 1_000
    redis_url: str = "redis://127.0.0.1:6379/0"
    worker_env: dict[str, str] = field(default_factory=dict)  # INFERLEDGER_WORKER_* settings
    api_server: str = "serve"  # python -m api.serve, or plain "uvicorn" (one process)
    api_workers: int = 1  # api.serve's processes


@dataclass
class Stack:
    cfg: StackConfig
    procs: Processes
    api_url: str
    deployment: Deployment
    ctx: Context  # the bench's own view of the same database
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    key_files: list[Path] = field(default_factory=list)  # the device agents' keys

    def fund(self, keys: list[bytes], amount_wei: int) -> None:
        """Each client key ``amount_wei`` deposited, as the journal would see a deposit."""
        with session_scope(self.ctx.engine) as session:
            specs = []
            for key in keys:
                client = Account.from_key(key).address
                specs.append(
                    TransferSpec(
                        f"deposit:{client.lower()}:{uuid.uuid4().hex}",
                        journal.VAULT,
                        journal.client_account(client),
                        amount_wei,
                        TransferKind.DEPOSIT,
                    )
                )
                row = session.get(Client, client)
                if row is None:
                    session.add(Client(address=client, deposited_wei=amount_wei))
                else:
                    row.deposited_wei += amount_wei
                    session.add(row)
            journal.post_batch(session, specs)


def _contributors(cfg: StackConfig, w3: Any, deployment: Deployment, keys: list[str]) -> list[Path]:
    """Each contributor key staked, with a fresh device key registered; the key files."""
    admin = actors.actor(w3, deployment, ARTIFACTS, keys[0])
    files = []
    for i, key in enumerate(keys[3 : 3 + cfg.contributors]):
        admin.transact(
            admin.token.functions.mint(Account.from_key(key).address, 1000 * TOKEN), "mint"
        )
        device = "0x" + bytes(Account.create().key).hex()
        actors.stake_and_register(actors.actor(w3, deployment, ARTIFACTS, key), 100 * TOKEN, device)
        path = cfg.data_dir / "devices" / f"device-{i + 1}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"address": Account.from_key(device).address, "private_key": device})
        )
        path.chmod(0o600)
        files.append(path)
    return files


def start(cfg: StackConfig, procs: Processes) -> Stack:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    rpc_url = start_hardhat_node(procs, free_port(), ROOT)
    w3 = connect(rpc_url)
    keys = dev_keys(3 + cfg.contributors)
    treasury = Account.from_key(keys[2]).address
    deployment, _ = deploy(
        w3, ARTIFACTS, keys[0], treasury=treasury, min_stake_wei=50 * TOKEN, challenge_window_s=2
    )
    deployment_file = cfg.data_dir / "deployment.json"
    deployment_file.write_text(deployment.to_json())
    key_files = _contributors(cfg, w3, deployment, keys)
    data = cfg.data_dir / "ledger"
    env = {
        "INFERLEDGER_MODE": "dev",
        "INFERLEDGER_DATA_DIR": str(data),
        "INFERLEDGER_DATABASE_URL": f"sqlite:///{data / 'ledger.db'}",
        "INFERLEDGER_RPC_URL": rpc_url,
        "INFERLEDGER_DEPLOYMENT_FILE": str(deployment_file),
        "INFERLEDGER_SETTLER_KEY": keys[0],
        "INFERLEDGER_REDIS_URL": cfg.redis_url,
        "INFERLEDGER_CELERY_QUEUE": f"bench-system-{uuid.uuid4().hex[:8]}",
        "INFERLEDGER_REPLICAS": str(cfg.replicas),
        "INFERLEDGER_TRUST_AFTER": str(cfg.trust_after),
        "INFERLEDGER_SPOT_CHECK_BPS": str(cfg.spot_check_bps),
        # the load generator sends as fast as it can: measure the system, not its limits
        "INFERLEDGER_RATE_LIMIT_BURST": "1000000",
        "INFERLEDGER_WORKER_MAX_IN_FLIGHT": "10000",
        "INFERLEDGER_ASSIGNMENT_DEADLINE_S": "3600",
        "INFERLEDGER_JOB_TIMEOUT_S": "7200",
        "PYTHONPATH": str(ROOT),
    }
    data.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        Settings(
            data_dir=data,
            database_url=env["INFERLEDGER_DATABASE_URL"],
            deployment_file=deployment_file,
            rpc_url=rpc_url,
        )
    )  # migrates the database before the services open it
    port = free_port()
    py = sys.executable
    pids = {}
    if cfg.api_server == "uvicorn":
        argv = [py, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [py, "-m", "api.serve", "--port", str(port), "--workers", str(cfg.api_workers)]
    api = procs.start("api", [*argv, "--log-level", "warning"], env=env, cwd=ROOT)
    pids["api"] = api.pid
    node = f"{env['INFERLEDGER_CELERY_QUEUE']}@bench"
    celery = procs.start(
        "celery-worker",
        [py, "-m", "celery", "-A", "ledger.celery_app", "worker", "--pool", "solo",
         "-Q", env["INFERLEDGER_CELERY_QUEUE"], "-n", node, "--loglevel", "WARNING"],
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    pids["celery_worker"] = celery.pid
    api_url = f"http://127.0.0.1:{port}"
    wait_until("the API", http_ok(f"{api_url}/healthz"), 90)
    stack = Stack(cfg, procs, api_url, deployment, ctx, env, pids, key_files)
    _start_devices(stack)
    _wait_ready(stack, keys[3 : 3 + cfg.contributors])
    return stack


def _start_devices(stack: Stack) -> None:
    for i, key_file in enumerate(stack.key_files):
        device = stack.procs.start(
            f"device-{i + 1}",
            [sys.executable, "-m", "worker", "run", "--api-url", stack.api_url, "--key-file",
             str(key_file), "--json", "--name", f"device-{i + 1}", "--workers",
             str(stack.cfg.device_workers)],
            env={**stack.env, **stack.cfg.worker_env},
            cwd=ROOT,
        )  # fmt: skip
        stack.pids[f"device_{i + 1}"] = device.pid


def restart_devices(stack: Stack, worker_env: dict[str, str]) -> None:
    """The device agents again, with ``worker_env`` as their ``INFERLEDGER_WORKER_*``
    settings; returns once each has signed in again (a new token in the database)."""
    names = [f"device-{i + 1}" for i in range(len(stack.key_files))]
    signed_in = _tokens(stack)
    for name in names:
        stack.procs.stop(name)  # SIGTERM: it finishes or hands back what it holds
    stack.procs.children = [(n, p) for n, p in stack.procs.children if n not in names]
    stack.cfg.worker_env = worker_env
    _start_devices(stack)
    wait_until(
        "the device agents signed in again", lambda: _tokens(stack) >= signed_in + len(names), 120
    )


def _tokens(stack: Stack) -> int:
    stack.procs.check_alive()
    with session_scope(stack.ctx.engine) as session:
        return int(session.exec(select(func.count()).select_from(AuthToken)).one())


def _wait_ready(stack: Stack, contributor_keys: list[str]) -> None:
    os.environ["INFERLEDGER_REDIS_URL"] = stack.cfg.redis_url  # read by the app at import
    from ledger.celery_app import app

    owners = [Account.from_key(k).address for k in contributor_keys]

    def devices_online() -> bool:
        stack.procs.check_alive()
        for owner in owners:
            url = f"{stack.api_url}/v1/contributors/{owner}/devices"
            listed = httpx.get(url, timeout=10).json()
            if not any(d["eligible"] and d["online"] for d in listed):
                return False
        return True

    wait_until("every device online and eligible", devices_online, 120, interval_s=0.25)
    node = f"{stack.env['INFERLEDGER_CELERY_QUEUE']}@bench"
    wait_until("the Celery worker", lambda: bool(app.control.ping([node], timeout=0.5)), 90)
