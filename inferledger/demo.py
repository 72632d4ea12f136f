"""``make demo``: the whole system on one machine, for real.

A Hardhat node, the contracts deployed, the API (uvicorn), a Celery worker and Celery beat on
Redis, three device workers of three contributors (each staked and registered on chain), a
client that deposits with a permit and pays for each request with a voucher, epochs closed
and settled on chain, every contributor's claim, and an audit of all of it. Every process
is stopped at the end, also on failure or Ctrl-C. Each run starts from a fresh chain and data
directory on free ports, so a second run needs no cleanup.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from eth_account import Account
from web3 import Web3
from web3.types import RPCEndpoint

from inferledger import actors
from inferledger.audit import Auditor, AuditReport, model_tolerances
from inferledger.client import ApiError, InferenceClient
from inferledger.procs import Processes, free_port, http_ok, start_hardhat_node, wait_until
from ledger.chain.client import ChainClient, connect
from ledger.chain.deploy import deploy
from ledger.config import DEV_MNEMONIC, REPO_ROOT
from protocol.contracts import CONTRACT_NAMES, EpochRecord, artifact

logger = logging.getLogger(__name__)
TOKEN = 10**18
REDIS_HELP = (
    "Redis is not reachable at {url}.\nStart it with:\n"
    '  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no\n'
    "or point INFERLEDGER_REDIS_URL at a running Redis."
)


@dataclass
class DemoConfig:
    requests: int = 60
    contributors: int = 3
    data_dir: Path = REPO_ROOT / ".inferledger" / "demo"
    redis_url: str = "redis://127.0.0.1:6379/0"
    epoch_interval_s: float = 4.0
    challenge_window_s: int = 2
    deposit_wei: int = 10 * TOKEN
    stake_wei: int = 100 * TOKEN
    min_stake_wei: int = 50 * TOKEN
    timeout_s: float = 300.0
    progress: Callable[[str], None] = field(default=lambda _msg: None)
    # Called with the result while every process still runs (tests inspect the live system).
    inspect: Callable[[DemoResult], None] | None = None


@dataclass
class DemoResult:
    summary: dict[str, Any]
    audit: AuditReport
    api_url: str
    rpc_url: str
    deployment: dict[str, Any]
    jobs: list[dict[str, Any]]
    client: str
    contributors: list[str]
    data_dir: Path


def dev_keys(count: int) -> list[str]:
    Account.enable_unaudited_hdwallet_features()
    return [
        "0x"
        + bytes(Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key).hex()
        for i in range(count)
    ]


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise SystemExit(REDIS_HELP.format(url=url)) from exc


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(cfg: DemoConfig) -> DemoResult:
    check_redis(cfg.redis_url)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    cfg.data_dir.mkdir(parents=True)
    try:
        with Processes(cfg.data_dir / "logs") as procs:
            return _run(cfg, procs)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _services_env(cfg: DemoConfig, rpc_url: str, settler_key: str) -> dict[str, str]:
    return {
        "INFERLEDGER_MODE": "dev",
        "INFERLEDGER_DATA_DIR": str(cfg.data_dir / "ledger"),
        "INFERLEDGER_RPC_URL": rpc_url,
        "INFERLEDGER_DEPLOYMENT_FILE": str(cfg.data_dir / "deployment.json"),
        "INFERLEDGER_SETTLER_KEY": settler_key,
        "INFERLEDGER_REDIS_URL": cfg.redis_url,
        "INFERLEDGER_CELERY_QUEUE": f"inferledger-demo-{uuid.uuid4().hex[:8]}",
        "INFERLEDGER_EPOCH_INTERVAL_S": str(cfg.epoch_interval_s),
        "INFERLEDGER_RECONCILE_INTERVAL_S": "1",
    }


def _run(cfg: DemoConfig, procs: Processes) -> DemoResult:
    started = time.monotonic()
    say = cfg.progress
    keys = dev_keys(6 + cfg.contributors)
    admin_key, client_key, treasury = keys[0], keys[1], Account.from_key(keys[2]).address
    contributor_keys = keys[3 : 3 + cfg.contributors]
    rpc_port, api_port = free_port(), free_port()
    rpc_url, api_url = f"http://127.0.0.1:{rpc_port}", f"http://127.0.0.1:{api_port}"

    say(f"starting a Hardhat node on {rpc_url}")
    start_hardhat_node(procs, rpc_port, REPO_ROOT)
    w3 = connect(rpc_url)
    artifacts_dir = REPO_ROOT / "artifacts"
    deployment, gas = deploy(
        w3,
        artifacts_dir,
        admin_key,
        treasury=treasury,
        min_stake_wei=cfg.min_stake_wei,
        challenge_window_s=cfg.challenge_window_s,
    )
    (cfg.data_dir / "deployment.json").write_text(deployment.to_json())
    say(f"deployed the contracts (vault {deployment.vault})")

    admin = actors.actor(w3, deployment, artifacts_dir, admin_key)
    for key in [client_key, *contributor_keys]:
        admin.transact(
            admin.token.functions.mint(Account.from_key(key).address, 1000 * TOKEN), "mint"
        )
    workers = []
    contributors = [actors.actor(w3, deployment, artifacts_dir, k) for k in contributor_keys]
    for i, contributor in enumerate(contributors):
        worker_key = "0x" + bytes(Account.create().key).hex()
        key_file = cfg.data_dir / "devices" / f"device-{i + 1}.json"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(
            json.dumps({"address": Account.from_key(worker_key).address, "private_key": worker_key})
        )
        key_file.chmod(0o600)
        workers.append(
            (actors.stake_and_register(contributor, cfg.stake_wei, worker_key), key_file)
        )
    say(f"{len(contributors)} contributors staked and registered a device each")

    env = _services_env(cfg, rpc_url, admin_key)
    py = sys.executable
    procs.start(
        "api",
        [
            py,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=REPO_ROOT,
    )
    procs.start(
        "celery-worker",
        [
            py,
            "-m",
            "celery",
            "-A",
            "ledger.celery_app",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "-Q",
            env["INFERLEDGER_CELERY_QUEUE"],
            "-n",
            f"{env['INFERLEDGER_CELERY_QUEUE']}@%h",
        ],
        env=env,
        cwd=REPO_ROOT,
    )
    procs.start(
        "celery-beat",
        [
            py,
            "-m",
            "celery",
            "-A",
            "ledger.celery_app",
            "beat",
            "--loglevel",
            "INFO",
            "-s",
            str(cfg.data_dir / "celerybeat-schedule"),
        ],
        env=env,
        cwd=REPO_ROOT,
    )
    wait_until("the API", http_ok(f"{api_url}/healthz"), 60)
    for i, (_, key_file) in enumerate(workers):
        procs.start(
            f"device-{i + 1}",
            [
                py,
                "-m",
                "worker",
                "run",
                "--api-url",
                api_url,
                "--key-file",
                str(key_file),
                "--json",
                "--name",
                f"device-{i + 1}",
                "--workers",
                "1",  # three devices share this machine
            ],
            cwd=REPO_ROOT,
        )
    say(f"API on {api_url}, Celery worker and beat, {len(workers)} device workers started")
    _wait_devices(api_url, [c.address for c in contributors], procs, cfg)

    client_chain = actors.actor(w3, deployment, artifacts_dir, client_key)
    actors.deposit_with_permit(client_chain, cfg.deposit_wei)
    say(f"the client deposited {cfg.deposit_wei / TOKEN:g} ILC with a permit")
    jobs = _pay_for_requests(cfg, procs, InferenceClient(api_url, client_key))
    accepted = [j for j in jobs if j["status"] == "accepted"]
    say(f"{len(accepted)}/{len(jobs)} requests reached consensus")

    charged = sum(int(j["price_wei"]) for j in accepted)
    last = _wait_settled(api_url, charged, cfg, procs)
    say(f"epoch {last['number']} settled on chain (root {last['root'][:18]}...)")
    claims = _claim_all(admin, contributors, api_url, last["number"], cfg)
    audit = Auditor(
        w3,
        deployment,
        {n: artifact(artifacts_dir, n)["abi"] for n in CONTRACT_NAMES},
        lambda n: httpx.get(f"{api_url}/v1/epochs/{n}/file", timeout=30).content,
        model_tolerances(REPO_ROOT / "models"),
    ).audit()
    say(f"audit of epochs {audit.epochs}: {'passed' if audit.ok else 'FAILED'}")

    epochs = httpx.get(f"{api_url}/v1/epochs", timeout=10).json()
    settler_gas = sum(int(e["gas_used"]) for e in epochs)
    actor_gas = gas + admin.gas_used + client_chain.gas_used + sum(c.gas_used for c in contributors)
    summary = {
        "requests": len(jobs),
        "accepted": len(accepted),
        "consensus_rate": len(accepted) / len(jobs) if jobs else 0.0,
        "accuracy": _accuracy(jobs),
        "client_paid_wei": int(
            client_chain.call(client_chain.vault.functions.redeemedOf(client_chain.address))
        ),
        "client_charged_wei": charged,
        "contributors": claims,
        "fees_wei": int(last["cumulative_fees_wei"]),
        "epochs": len(epochs),
        "gas_used": {
            "settler_epochs": settler_gas,
            "deploy_and_actors": actor_gas,
            "total": settler_gas + actor_gas,
        },
        "audit_ok": audit.ok,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    result = DemoResult(
        summary,
        audit,
        api_url,
        rpc_url,
        json.loads(deployment.to_json()),
        jobs,
        client_chain.address,
        [c.address for c in contributors],
        cfg.data_dir,
    )
    if cfg.inspect is not None:
        cfg.inspect(result)
    return result


def _samples() -> tuple[np.ndarray[Any, Any], list[int]]:
    data = json.loads((REPO_ROOT / "models" / "digits-cnn" / "samples.json").read_text())
    images = np.asarray(data["images"], dtype=np.float32).reshape(-1, 1, 8, 8)
    return images, list(data["labels"])


def _accuracy(jobs: list[dict[str, Any]]) -> float:
    _, labels = _samples()
    right = total = 0
    for i, job in enumerate(jobs):
        if job["status"] == "accepted" and job.get("outputs"):
            raw = job["outputs"]["logits"]
            logits = np.frombuffer(base64.b64decode(raw["data"]), dtype="<f4")
            right += int(int(np.argmax(logits)) == labels[i % len(labels)])
            total += 1
    return right / total if total else 0.0


def _wait_devices(api_url: str, contributors: list[str], procs: Processes, cfg: DemoConfig) -> None:
    """Every contributor's device signed in, eligible and pulling work: paying before then
    would leave the late ones out of every job."""

    def ready() -> bool:
        procs.check_alive()
        for owner in contributors:
            listed = httpx.get(f"{api_url}/v1/contributors/{owner}/devices", timeout=10).json()
            if not any(d["eligible"] and d["online"] for d in listed):
                return False
        return True

    wait_until("every device online and eligible", ready, cfg.timeout_s, interval_s=0.25)
    cfg.progress(f"  {len(contributors)} devices online and eligible")


def _pay_for_requests(
    cfg: DemoConfig, procs: Processes, client: InferenceClient
) -> list[dict[str, Any]]:
    images, _ = _samples()
    model = next(m["model_hash"] for m in client.models() if m["name"] == "digits-cnn")
    deadline = time.monotonic() + cfg.timeout_s
    submitted = []
    for i in range(cfg.requests):
        while True:
            try:
                submitted.append(client.submit(model, {"input": images[i % len(images)][None]}))
                break
            except ApiError as exc:  # the device workers may still be signing in
                if exc.code != "no_capacity" or time.monotonic() > deadline:
                    raise
                procs.check_alive()
                time.sleep(0.2)
        if (i + 1) % 10 == 0:
            cfg.progress(f"  {i + 1}/{cfg.requests} paid requests submitted")
    return [
        client.wait(job["job_id"], timeout_s=max(1.0, deadline - time.monotonic()))
        for job in submitted
    ]


def _wait_settled(
    api_url: str, charged_wei: int, cfg: DemoConfig, procs: Processes
) -> dict[str, Any]:
    """Wait until a posted epoch covers every charged job (beat closes them on schedule)."""
    found: dict[str, Any] = {}

    def settled() -> bool:
        procs.check_alive()
        posted = [
            e
            for e in httpx.get(f"{api_url}/v1/epochs", timeout=10).json()
            if e["status"] == "posted"
        ]
        if (
            posted
            and int(posted[-1]["cumulative_payout_wei"]) + int(posted[-1]["cumulative_fees_wei"])
            == charged_wei
        ):
            found.update(posted[-1])
            return True
        return False

    wait_until("epoch settlement", settled, cfg.timeout_s, interval_s=0.5)
    return found


def wait_claimable(w3: Web3, claimable_at: int, timeout_s: float) -> None:
    """Wait until chain time reaches ``claimable_at`` (an epoch's challenge window is over).

    A live chain makes blocks all the time; the automining dev node only on demand, so nudge
    it with an empty block once wall time has passed it. A busy dev node runs ahead of the
    wall clock (each block at least a second after the last); then each empty block moves
    chain time on by one second, so keep mining."""

    def window_over() -> bool:
        latest = int(w3.eth.get_block("latest")["timestamp"])
        if latest >= claimable_at:
            return True
        if time.time() >= claimable_at or latest >= time.time():
            w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        return False

    wait_until("the challenge window", window_over, timeout_s, interval_s=0.25)


def _claim_all(
    admin: ChainClient,
    contributors: list[ChainClient],
    api_url: str,
    epoch: int,
    cfg: DemoConfig,
) -> list[dict[str, Any]]:
    claimable_at = EpochRecord.from_call(
        admin.call(admin.settlement.functions.epochs(epoch))
    ).claimable_at

    wait_claimable(admin.w3, claimable_at, cfg.challenge_window_s + 30.0)
    out = []
    for c in contributors:
        response = httpx.get(f"{api_url}/v1/epochs/{epoch}/proofs/{c.address}", timeout=10)
        if response.status_code == 404:  # this contributor's device got no job
            out.append(
                {"contributor": c.address, "earned_wei": 0, "claimed_wei": 0, "received_wei": 0}
            )
            continue
        proof = response.json()
        before = int(c.call(c.token.functions.balanceOf(c.address)))
        actors.claim(c, epoch, c.address, int(proof["cumulative_wei"]), proof["proof"])
        after = int(c.call(c.token.functions.balanceOf(c.address)))
        out.append(
            {
                "contributor": c.address,
                "earned_wei": int(proof["cumulative_wei"]),
                "claimed_wei": int(c.call(c.settlement.functions.claimedOf(c.address))),
                "received_wei": after - before,
            }
        )
    admin.transact(admin.settlement.functions.claimFees(epoch), "claimFees")
    cfg.progress(f"{len(out)} contributors claimed; the treasury claimed the fees")
    return out
