"""The API under test over real parts: its own contracts on the shared Hardhat node, a fresh
SQLite database, a client with a deposit and contributors with staked, registered device keys.
Workers compute real outputs with onnxruntime and sign real attestations."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import redis
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3 import Web3

import api.deps
import api.main
from inferledger import actors
from ledger.chain.client import ChainClient
from ledger.chain.deploy import deploy
from ledger.config import REPO_ROOT, Settings, get_settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.reconcile import ReconcileReport, reconcile_batch
from protocol import hashing, tensors
from protocol.contracts import Deployment
from protocol.eip712 import Attestation, Voucher, sign_attestation, sign_voucher
from protocol.fingerprint import Fingerprint, cpu_isa_tier
from protocol.manifest import Manifest, load_manifest
from worker.model_files import model_bytes

TOKEN = 10**18
ARTIFACTS = REPO_ROOT / "artifacts"
MODEL_DIR = REPO_ROOT / "models" / "digits-cnn"
TEXT_MODEL_DIR = REPO_ROOT / "models" / "minilm-l6"
STAKE_WEI = 100 * TOKEN
MIN_STAKE_WEI = 50 * TOKEN
CLIENT_DEPOSIT_WEI = 1 * TOKEN  # a thousand rows of digits-cnn

Arrays = dict[str, npt.NDArray[Any]]


def samples(rows: int, start: int = 0) -> Arrays:
    """``rows`` held-out digits as the model's input."""
    images = json.loads((MODEL_DIR / "samples.json").read_text())["images"]
    picked = [images[(start + i) % len(images)] for i in range(rows)]
    return {"input": np.asarray(picked, dtype=np.float32).reshape(rows, 1, 8, 8)}


def wire(arrays: Arrays) -> dict[str, Any]:
    return {name: tensors.encode(a) for name, a in arrays.items()}


class Model:
    """A model on onnxruntime with one intra-op thread, each row at batch 1 (as a worker);
    a model built from a source is built into the model cache first."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            model_bytes(manifest), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.fingerprint = Fingerprint(
            ort=ort.__version__,
            provider="CPUExecutionProvider",
            isa=cpu_isa_tier(),
            opt_level="all",
            threads=1,
        )

    def run(self, inputs: Arrays) -> Arrays:
        names = [o.name for o in self.manifest.outputs]
        rows = next(iter(inputs.values())).shape[0]
        per_row = [
            self.session.run(names, {k: v[i : i + 1] for k, v in inputs.items()})
            for i in range(rows)
        ]
        return {name: np.concatenate([r[j] for r in per_row]) for j, name in enumerate(names)}


@dataclass
class Contributor:
    key: str
    address: str
    device: LocalAccount
    token: str = ""

    @property
    def worker(self) -> str:
        return str(self.device.address)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ApiEnv:
    http: TestClient
    ctx: Context
    deployment: Deployment
    admin: ChainClient
    client_key: str
    contributors: list[Contributor]
    manifest: Manifest
    model: Model
    outputs_cache: dict[str, Arrays] = field(default_factory=dict)
    other_models: dict[str, Model] = field(default_factory=dict)

    def model_for(self, model_hash: str) -> Model:
        """The model an assignment names: digits-cnn, or another one of ``ctx.models``."""
        key = model_hash.lower().removeprefix("0x")
        if key == self.manifest.sha256:
            return self.model
        if key not in self.other_models:
            self.other_models[key] = Model(self.ctx.models[key])
        return self.other_models[key]

    @property
    def client(self) -> str:
        return str(Account.from_key(self.client_key).address)

    @property
    def model_hash(self) -> str:
        return "0x" + self.manifest.sha256

    # -- chain -------------------------------------------------------------------------
    def actor(self, key: str) -> ChainClient:
        return ChainClient(self.admin.w3, self.deployment, ARTIFACTS, key)

    def fund_and_deposit(self, key: str, amount_wei: int) -> None:
        who = Account.from_key(key).address
        self.admin.transact(self.admin.token.functions.mint(who, amount_wei), "mint")
        actors.deposit_with_permit(self.actor(key), amount_wei)

    # -- sign-in -----------------------------------------------------------------------
    def challenge(self, address: str) -> dict[str, Any]:
        r = self.http.post("/v1/auth/challenge", json={"address": address})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def sign_in(self, device: LocalAccount) -> str:
        ch = self.challenge(device.address)
        sig = device.sign_message(encode_defunct(text=ch["message"])).signature
        r = self.http.post(
            "/v1/auth/token",
            json={
                "address": device.address,
                "nonce": ch["nonce"],
                "signature": "0x" + bytes(sig).hex(),
            },
        )
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def sign_in_all(self) -> None:
        for c in self.contributors:
            c.token = self.sign_in(c.device)

    # -- clients -----------------------------------------------------------------------
    def balance(self, address: str | None = None) -> dict[str, Any]:
        r = self.http.get(f"/v1/clients/{address or self.client}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def job_body(
        self,
        inputs: Arrays,
        cumulative_wei: int,
        *,
        key: str | None = None,
        client: str | None = None,
        model: str | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        key = key or self.client_key
        client = client or str(Account.from_key(key).address)
        voucher = Voucher(client, cumulative_wei, expiry or int(time.time()) + 86_400)
        sig = sign_voucher(
            self.deployment.vault_domain, voucher, bytes.fromhex(key.removeprefix("0x"))
        )
        return {
            "model": model or self.model_hash,
            "inputs": wire(inputs),
            "voucher": {
                "client": client,
                "cumulative_amount_wei": str(cumulative_wei),
                "expiry": voucher.expiry,
            },
            "signature": "0x" + sig.hex(),
        }

    def next_body(self, inputs: Arrays, key: str | None = None) -> dict[str, Any]:
        """A job body paying the next voucher: the last one plus this job's price."""
        address = str(Account.from_key(key or self.client_key).address)
        rows = next(iter(inputs.values())).shape[0]
        last = int(self.balance(address)["max_voucher_wei"])
        return self.job_body(inputs, last + self.manifest.price_wei(rows), key=key)

    def submit_job(self, inputs: Arrays, key: str | None = None) -> dict[str, Any]:
        r = self.http.post("/v1/jobs", json=self.next_body(inputs, key))
        assert r.status_code == 202, r.text
        return dict(r.json())

    # -- workers -----------------------------------------------------------------------
    def pull(self, c: Contributor) -> list[dict[str, Any]]:
        r = self.http.get("/v1/work", headers=c.headers)
        assert r.status_code == 200, r.text
        return list(r.json()["assignments"])

    def assigned(self, job_id: str) -> list[Contributor]:
        with session_scope(self.ctx.engine) as session:
            from sqlmodel import select

            from ledger.models import Assignment

            workers = {
                a.worker
                for a in session.exec(select(Assignment).where(Assignment.job_id == job_id)).all()
            }
        return [c for c in self.contributors if c.worker in workers]

    def result_item(
        self,
        assignment: dict[str, Any],
        signer: LocalAccount,
        *,
        outputs: Arrays | None = None,
        result_hash: bytes | None = None,
        fingerprint: Fingerprint | None = None,
    ) -> dict[str, Any]:
        """A correct submission for ``assignment`` (as pulled), attested by ``signer``."""
        fingerprint = fingerprint or self.model.fingerprint
        inputs = {k: tensors.decode(v, max_bytes=1 << 20) for k, v in assignment["inputs"].items()}
        if outputs is None:
            outputs = self.outputs_cache.get(assignment["job_id"])
            if outputs is None:
                runner = self.model_for(assignment["model_hash"])
                outputs = self.outputs_cache[assignment["job_id"]] = runner.run(inputs)
        model = bytes.fromhex(assignment["model_hash"][2:])
        if result_hash is None:
            result_hash = hashing.result_hash(model, inputs, outputs)
        att = Attestation(
            bytes.fromhex(assignment["job_id"][2:]),
            model,
            bytes.fromhex(assignment["input_hash"][2:]),
            result_hash,
            fingerprint.digest(),
        )
        sig = sign_attestation(self.deployment.registry_domain, att, bytes(signer.key))
        return {
            "job_id": assignment["job_id"],
            "result_hash": "0x" + result_hash.hex(),
            "fingerprint": json.loads(fingerprint.canonical()),
            "outputs": wire(outputs),
            "signature": "0x" + sig.hex(),
        }

    def post_results(self, c: Contributor, items: list[Any]) -> list[dict[str, Any]]:
        r = self.http.post("/v1/work/results", json={"results": items}, headers=c.headers)
        assert r.status_code == 200, r.text
        return list(r.json()["results"])

    def reconcile(self) -> ReconcileReport:
        with session_scope(self.ctx.engine) as session:
            return reconcile_batch(session, self.ctx, 500)

    def answer(self, job_id: str) -> None:
        """Every replica of ``job_id`` answers correctly; then reconcile."""
        for c in self.assigned(job_id):
            mine = [a for a in self.pull(c) if a["job_id"] == job_id]
            (result,) = self.post_results(c, [self.result_item(mine[0], c.device)])
            assert result["status"] == "accepted", result
        assert self.reconcile().accepted >= 1

    def answer_all(self) -> int:
        """Every contributor answers what it holds correctly; then reconcile. Returns the
        assignments answered."""
        answered = 0
        for c in self.contributors:
            items = [self.result_item(a, c.device) for a in self.pull(c)]
            if items:
                self.post_results(c, items)
                answered += len(items)
        if answered:
            self.reconcile()
        return answered

    def run_job(self, inputs: Arrays) -> dict[str, Any]:
        """Submit, have both replicas answer correctly, reconcile; return the decided job."""
        job = self.submit_job(inputs)
        self.answer(job["job_id"])
        r = self.http.get(f"/v1/jobs/{job['job_id']}")
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        return dict(r.json())


def malformed_items(good: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, item): ``good`` (a correct submission of 4 rows) spoilt one way each."""

    def edit(**changes: Any) -> dict[str, Any]:
        item = copy.deepcopy(good)
        for k, v in changes.items():
            if v is ...:
                del item[k]
            else:
                item[k] = v
        return item

    logits = good["outputs"]["logits"]
    return [
        ("empty", {}),
        ("no-job-id", edit(job_id=...)),
        ("job-id-number", edit(job_id=12)),
        ("job-id-short", edit(job_id="0x1234")),
        ("job-id-object", edit(job_id={"a": 1})),
        ("no-result-hash", edit(result_hash=...)),
        ("result-hash-not-hex", edit(result_hash="0x" + "zz" * 32)),
        ("result-hash-null", edit(result_hash=None)),
        ("no-fingerprint", edit(fingerprint=...)),
        ("fingerprint-text", edit(fingerprint="avx2")),
        ("fingerprint-list", edit(fingerprint=[1, 2])),
        ("fingerprint-partial", edit(fingerprint={"ort": "1"})),
        ("fingerprint-threads-text", edit(fingerprint={**good["fingerprint"], "threads": "many"})),
        ("no-outputs", edit(outputs=...)),
        ("outputs-null", edit(outputs=None)),
        ("outputs-list", edit(outputs=[logits])),
        ("outputs-wrong-name", edit(outputs={"probs": logits})),
        ("outputs-extra", edit(outputs={"logits": logits, "extra": logits})),
        (
            "outputs-wrong-dtype",
            edit(outputs=wire({"logits": np.zeros((4, 10), dtype=np.float64)})),
        ),
        ("outputs-wrong-shape", edit(outputs=wire({"logits": np.zeros((4, 9), dtype=np.float32)}))),
        ("outputs-wrong-rows", edit(outputs=wire({"logits": np.zeros((3, 10), dtype=np.float32)}))),
        ("outputs-nan", edit(outputs=wire({"logits": np.full((4, 10), np.nan, dtype=np.float32)}))),
        ("outputs-not-base64", edit(outputs={"logits": {**logits, "data": "***"}})),
        ("outputs-huge", edit(outputs={"logits": {**logits, "shape": [10**9, 10]}})),
        ("outputs-tensor-text", edit(outputs={"logits": "0.1,0.2"})),
        ("no-signature", edit(signature=...)),
        ("signature-short", edit(signature="0x1234")),
        ("signature-not-hex", edit(signature="0x" + "zz" * 65)),
        ("signature-number", edit(signature=7)),
        ("signature-high-s", edit(signature="0x" + "ff" * 65)),
        ("signature-zeros", edit(signature="0x" + "00" * 65)),
    ]


@contextmanager
def own_celery_queue(redis_url: str, prefix: str) -> Iterator[str]:
    """The API enqueues a reconcile when a job's replicas have all answered (the tests
    reconcile themselves). The Celery app reads its settings once, at import: point it at a
    queue of its own on the real Redis that nothing consumes, and empty that afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERLEDGER_REDIS_URL", redis_url)
        mp.setenv("INFERLEDGER_CELERY_QUEUE", prefix + uuid.uuid4().hex[:10])
        get_settings.cache_clear()
        import ledger.celery_app

        queue = str(ledger.celery_app.app.conf.task_default_queue)
    get_settings.cache_clear()
    try:
        yield queue
    finally:
        if queue.startswith(prefix):
            r = redis.Redis.from_url(redis_url)
            for key in r.scan_iter(f"*{queue}*"):
                r.delete(key)


def deploy_fresh(w3: Web3, admin_key: str, treasury: str) -> Deployment:
    deployment, _ = deploy(
        w3,
        ARTIFACTS,
        admin_key,
        treasury=treasury,
        min_stake_wei=MIN_STAKE_WEI,
        challenge_window_s=2,
    )
    return deployment


@contextmanager
def api_env(
    w3: Web3,
    rpc_url: str,
    keys: list[str],
    data_dir: Path,
    *,
    contributors: int = 3,
    database_url: str | None = None,
    **overrides: Any,
) -> Iterator[ApiEnv]:
    """The API on contracts of its own: key 0 admin and settler, 1 the client (deposited),
    2 the treasury, 3.. contributors, each with a fresh random device key registered.
    The database is a fresh SQLite file in ``data_dir`` unless ``database_url`` is given."""
    treasury = w3.eth.account.from_key(keys[2]).address
    deployment = deploy_fresh(w3, keys[0], treasury)
    deployment_file = data_dir / "deployment.json"
    deployment_file.write_text(deployment.to_json())
    admin = ChainClient(w3, deployment, ARTIFACTS, keys[0])
    people = []
    for key in keys[3 : 3 + contributors]:
        who = ChainClient(w3, deployment, ARTIFACTS, key)
        admin.transact(admin.token.functions.mint(who.address, STAKE_WEI), "mint")
        device = Account.create()
        actors.stake_and_register(who, STAKE_WEI, "0x" + bytes(device.key).hex())
        people.append(Contributor(key=key, address=who.address, device=device))
    settings = Settings(
        database_url=database_url or f"sqlite:///{data_dir / 'ledger.db'}",
        data_dir=data_dir,
        deployment_file=deployment_file,
        settler_key=keys[0],
        rpc_url=rpc_url,
        worker_seen_s=3600,
        # the Celery reconciler's path, which these tests run by hand (``reconcile()``);
        # deciding in the request has its own tests (test_api_decide_inline.py)
        **{"reconcile_inline_max": 0, **overrides},
    )
    ctx = Context(settings)
    app = api.main.create_app()
    app.dependency_overrides[api.deps.get_context] = lambda: ctx
    manifest = load_manifest(MODEL_DIR)
    with TestClient(app) as http:
        env = ApiEnv(http, ctx, deployment, admin, keys[1], people, manifest, Model(manifest))
        env.fund_and_deposit(keys[1], CLIENT_DEPOSIT_WEI)
        yield env
    ctx.engine.dispose()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` behind a real HTTP server (uvicorn, in a thread) on a free port: its URL."""
    import threading

    import uvicorn

    from inferledger.procs import free_port, wait_until

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    try:
        wait_until("the API server", lambda: server.started, 30, interval_s=0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def answering(env: ApiEnv) -> Iterator[None]:
    """The contributors' devices answer every assignment correctly (in a thread, polling
    every 20 ms) until the block ends."""
    import threading

    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                env.answer_all()
            except BaseException as exc:  # reported by the test's thread
                failures.append(exc)
                return
            stop.wait(0.02)

    thread = threading.Thread(target=loop, name="devices", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
    if failures:
        raise failures[0]
