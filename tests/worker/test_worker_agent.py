"""The agent against a stand-in for the API's wire contract (a real HTTP server)."""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from eth_account.signers.local import LocalAccount
from worker_fake_api import CHAIN, FakeApi, make_assignment

from protocol.contracts import Deployment
from protocol.eip712 import Attestation, recover_attestation
from protocol.hashing import result_hash
from protocol.manifest import load_models
from protocol.tensors import decode
from worker.agent import Agent
from worker.api_client import ApiClient
from worker.config import WorkerSettings
from worker.errors import AuthRefused
from worker.inference import ModelStore
from worker.stats import Stats

DOMAIN = Deployment.from_dict({**CHAIN, "block": 0}).registry_domain


class Running:
    """An agent running in a thread until ``stop()``."""

    def __init__(self, settings: WorkerSettings, account: LocalAccount) -> None:
        self.store = ModelStore(settings.models_dir)
        self.client = ApiClient(settings, account)
        self.agent = Agent(settings, account, self.store, self.client)
        self.event = threading.Event()
        self.result: Stats | BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.result = self.agent.run(self.event)
        except BaseException as exc:  # handed to the test thread
            self.result = exc

    def stop(self) -> Stats:
        self.event.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        self.client.close()
        if isinstance(self.result, BaseException):
            raise self.result
        assert isinstance(self.result, Stats)
        return self.result


def _model(settings: WorkerSettings) -> str:
    return next(iter(load_models(settings.models_dir)))


def _check_signed(
    posted: dict[str, Any], assignment: dict[str, Any], store: ModelStore, address: str
) -> None:
    inputs = {n: decode(t, max_bytes=1 << 20) for n, t in assignment["inputs"].items()}
    model = bytes.fromhex(assignment["model_hash"][2:])
    outputs = store.run(model.hex(), inputs)
    expected = result_hash(model, inputs, outputs)
    assert posted["result_hash"] == "0x" + expected.hex()
    assert decode(posted["outputs"]["logits"], max_bytes=1 << 20).tobytes() == (
        outputs["logits"].tobytes()
    )
    assert posted["fingerprint"] == asdict(store.fingerprint())
    attestation = Attestation(
        job_id=bytes.fromhex(posted["job_id"][2:]),
        model_hash=model,
        input_hash=bytes.fromhex(assignment["input_hash"][2:]),
        result_hash=expected,
        fingerprint=store.fingerprint().digest(),
    )
    signature = bytes.fromhex(posted["signature"][2:])
    assert len(signature) == 65
    assert recover_attestation(DOMAIN, attestation, signature) == address


def test_agent_signs_good_jobs_and_skips_bad_ones(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    good = make_assignment(model, {"input": digits[:5]}, job=1)
    mismatched = make_assignment(model, {"input": digits[5:10]}, job=2)
    mismatched["input_hash"] = make_assignment(model, {"input": digits[10:15]}, job=2)["input_hash"]
    malformed = make_assignment(model, {"input": digits[:1]}, job=3)
    malformed["inputs"]["input"]["data"] = "not base64!"
    unknown = make_assignment("cd" * 32, {"input": digits[:1]}, job=4)
    other_good = make_assignment(model, {"input": digits[20:21]}, job=5)
    fake_api.assignments = [good, mismatched, malformed, unknown, "junk", other_good]
    running = Running(settings, account)
    fake_api.wait_posted(2)
    stats = running.stop()
    assert [p["job_id"] for p in fake_api.posted] == [good["job_id"], other_good["job_id"]]
    _check_signed(fake_api.posted[0], good, running.store, account.address)
    _check_signed(fake_api.posted[1], other_good, running.store, account.address)
    assert (stats.done, stats.refused, stats.errors, stats.rows) == (2, 0, 4, 6)
    assert fake_api.count("POST", "/v1/work/results") == 1  # one POST per pull


def test_refused_results_are_counted(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    jobs = [make_assignment(model, {"input": digits[i : i + 1]}, job=i) for i in range(3)]
    fake_api.assignments = jobs
    fake_api.refuse[jobs[1]["job_id"]] = "deadline_passed"
    running = Running(settings, account)
    fake_api.wait_posted(3)
    stats = running.stop()
    assert (stats.done, stats.refused, stats.errors) == (2, 1, 0)


def test_agent_signs_in_again_on_401(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    fake_api.assignments = [make_assignment(_model(settings), {"input": digits[:2]}, job=1)]
    fake_api.revoke_tokens_after_pull = True
    running = Running(settings, account)
    fake_api.wait_posted(1)
    stats = running.stop()
    assert fake_api.tokens_issued == 2
    assert stats.done == 1


def test_agent_rides_out_5xx_and_an_unreachable_api(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    fake_api.fail_next = {
        "/v1/chain": [502],
        "/v1/work": [503, 500, 503],
        "/v1/work/results": [503, 429],
    }
    fake_api.assignments = [make_assignment(_model(settings), {"input": digits[:3]}, job=1)]
    running = Running(settings, account)
    fake_api.wait_posted(1)
    stats = running.stop()
    assert stats.done == 1 and stats.errors == 0
    assert fake_api.count("POST", "/v1/work/results") == 3


def test_agent_retries_api_errors_while_connecting(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    fake_api.fail_next = {"/v1/chain": [404, 400]}
    fake_api.assignments = [make_assignment(_model(settings), {"input": digits[:1]}, job=1)]
    running = Running(settings, account)
    fake_api.wait_posted(1)
    stats = running.stop()
    assert (stats.done, stats.api_errors) == (1, 2)


def test_agent_stops_cleanly_while_the_api_is_down(
    settings: WorkerSettings, account: LocalAccount, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = settings.model_copy(update={"api_url": f"http://127.0.0.1:{port}"})
    running = Running(down, account)
    threading.Event().wait(0.3)
    stats = running.stop()
    assert stats.done == 0


def test_held_jobs_are_submitted_after_stop(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    fake_api.assignments = [
        make_assignment(model, {"input": digits[i : i + 1]}, job=i) for i in range(4)
    ]
    holder: list[Running] = []
    fake_api.on_pull = lambda: holder[0].event.set()  # stop arrives while the pull is answered
    fake_api.fail_next = {"/v1/work/results": [503]}  # and the first submit fails
    holder.append(Running(settings, account))
    holder[0].thread.join(timeout=10)
    stats = holder[0].stop()
    assert len(fake_api.posted) == 4
    assert stats.done == 4


def test_refused_sign_in_is_fatal(
    settings: WorkerSettings, account: LocalAccount, fake_api: FakeApi
) -> None:
    fake_api.fail_next = {"/v1/auth/token": [403]}
    running = Running(settings, account)
    running.thread.join(timeout=10)
    with pytest.raises(AuthRefused) as caught:
        running.stop()
    assert caught.value.status == 403
