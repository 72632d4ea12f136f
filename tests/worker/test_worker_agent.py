"""The agent against a stand-in for the API's wire contract (a real HTTP server)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from eth_account.signers.local import LocalAccount
from running_agent import Running
from worker_fake_api import CHAIN, FakeApi, make_assignment

from protocol.contracts import Deployment
from protocol.eip712 import Attestation, recover_attestation
from protocol.hashing import result_hash
from protocol.manifest import load_models
from protocol.tensors import decode
from worker.agent import MAX_CHUNK
from worker.config import WorkerSettings
from worker.errors import AuthRefused
from worker.inference import ModelStore

DOMAIN = Deployment.from_dict({**CHAIN, "block": 0}).registry_domain


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


def _malformed(model: str, digits: npt.NDArray[np.float32]) -> tuple[list[Any], list[Any]]:
    """(assignments with a well-formed job id, assignments without one): each spoilt one way,
    as a broken or hostile API could send them; none may crash the agent or be signed."""

    def job(n: int, rows: npt.NDArray[Any] | None = None) -> dict[str, Any]:
        return make_assignment(model, {"input": digits[:1] if rows is None else rows}, job=n)

    mismatched = job(10, digits[5:10])
    mismatched["input_hash"] = job(10, digits[10:15])["input_hash"]
    bad_base64 = job(11)
    bad_base64["inputs"]["input"]["data"] = "not base64!"
    huge_shape = job(12)
    huge_shape["inputs"]["input"]["shape"] = [10**9, 1, 8, 8]
    no_deadline = job(13)
    del no_deadline["deadline"]
    inputs_text = {**job(14), "inputs": "pixels"}
    model_null = {**job(15), "model_hash": None}
    too_many_rows = make_assignment(model, {"input": np.concatenate([digits] * 1)[:65]}, job=16)
    wrong_shape = make_assignment(model, {"input": np.zeros((1, 1, 9, 9), np.float32)}, job=17)
    wrong_dtype = make_assignment(model, {"input": np.zeros((1, 1, 8, 8), np.float64)}, job=18)
    wrong_name = make_assignment(model, {"image": digits[:1]}, job=19)
    unknown_model = make_assignment("cd" * 32, {"input": digits[:1]}, job=20)
    with_id = [
        mismatched, bad_base64, huge_shape, no_deadline, inputs_text, model_null,
        too_many_rows, wrong_shape, wrong_dtype, wrong_name, unknown_model,
    ]  # fmt: skip
    without_id = ["junk", 7, None, [], {}, {"job_id": 12}, {"job_id": "0x1234"}]
    return with_id, without_id


def test_agent_signs_good_jobs_and_skips_malformed_ones_once(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    good = make_assignment(model, {"input": digits[:5]}, job=1)
    other_good = make_assignment(model, {"input": digits[20:21]}, job=2)
    with_id, without_id = _malformed(model, digits)
    fake_api.assignments = [good, *with_id[:5], *without_id, other_good, *with_id[5:]]
    fake_api.redeliver = True  # as the API: again and again until answered or handed back
    running = Running(settings.model_copy(update={"pull_batch": 64, "max_held": 64}), account)
    fake_api.wait_posted(2)
    wait_for(lambda: len(fake_api.released) == len(with_id))
    wait_for(lambda: fake_api.count("GET", "/v1/work") >= 5)  # re-delivered several times
    stats = running.stop()
    assert sorted(p["job_id"] for p in fake_api.posted) == sorted(
        [good["job_id"], other_good["job_id"]]
    )
    _check_signed(next(p for p in fake_api.posted if p["job_id"] == good["job_id"]), good,
                  running.store, account.address)  # fmt: skip
    assert sorted(fake_api.released) == sorted(a["job_id"] for a in with_id)
    assert fake_api.assignments == without_id  # still delivered: they cannot be handed back
    total = len(with_id) + len(without_id)
    assert (stats.done, stats.refused, stats.errors, stats.rows) == (2, 0, total, 6)
    assert stats.handed_back == len(with_id) and stats.pulled == total + 2


def test_malformed_pull_answers_are_api_errors_not_crashes(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    fake_api.bad_pull_answers = [
        {"assignments": "many"},
        {"assignments": None},
        {},
        [1, 2],
        "text",
        {"assignments": [{"job_id": "0x" + "ab" * 32}] * 3},  # the same job three times
    ]
    fake_api.assignments = [make_assignment(_model(settings), {"input": digits[:2]}, job=1)]
    running = Running(settings, account)
    fake_api.wait_posted(1)
    stats = running.stop()
    assert (stats.done, stats.api_errors) == (1, 5)
    assert stats.errors == 1  # the malformed job, once, although it came three times
    assert fake_api.released == ["0x" + "ab" * 32]


def test_results_go_back_in_batches(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    fake_api.assignments = [
        make_assignment(model, {"input": digits[i : i + 1]}, job=i) for i in range(40)
    ]
    batched = settings.model_copy(
        update={"pull_batch": 40, "max_held": 40, "submit_batch": 16, "submit_linger_s": 60}
    )
    running = Running(batched, account)
    fake_api.wait_posted(40)
    stats = running.stop()
    assert fake_api.batches == [16, 16, 8]  # full batches; the rest once nothing else runs
    assert fake_api.count("GET", "/v1/work") >= 1 and stats.done == 40


def test_results_go_back_within_the_submission_size_limit(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    """Every result reveals its outputs, so a batch of a large model's results can pass the
    API's body limit: a POST is split to stay within ``submit_max_bytes``."""
    model = _model(settings)
    fake_api.assignments = [
        make_assignment(model, {"input": digits[i : i + 8]}, job=i) for i in range(24)
    ]
    limit = 8192
    batched = settings.model_copy(
        update={
            "pull_batch": 24,
            "max_held": 24,
            "submit_batch": 24,
            "submit_linger_s": 60,
            "submit_max_bytes": limit,
        }
    )
    running = Running(batched, account)
    fake_api.wait_posted(24)
    stats = running.stop()
    assert stats.done == 24 and sum(fake_api.batches) == 24
    assert len(fake_api.batches) > 2  # 24 results of 8 rows do not fit in 8 KiB
    assert max(fake_api.batch_bytes) <= limit, fake_api.batch_bytes
    assert min(fake_api.batch_bytes) > 0


def test_an_older_api_without_the_optional_routes_is_asked_once(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    fake_api.older_api = True
    fake_api.assignments = [
        make_assignment("cd" * 32, {"input": digits[:1]}, job=1),
        make_assignment(model, {"input": digits[:1]}, job=2),
    ]
    often = settings.model_copy(update={"heartbeat_interval_s": 0.01, "earnings_interval_s": 0.01})
    running = Running(often, account)
    fake_api.wait_posted(1)
    wait_for(lambda: fake_api.count("GET", "/v1/work") >= 10)
    stats = running.stop()
    assert stats.done == 1 and stats.errors == 1 and stats.api_errors == 0
    for path in ("/v1/work/heartbeat", "/v1/work/release"):
        assert fake_api.count("POST", path) == 1, path
    assert fake_api.count("GET", "/v1/work/earnings") == 1
    assert stats.eligible is None and stats.pending_wei is None and stats.handed_back == 0


def test_the_status_shows_earnings_and_a_worker_that_is_not_eligible(
    settings: WorkerSettings, account: LocalAccount, fake_api: FakeApi
) -> None:
    fake_api.pending_wei = 1_234_567_000_000_000_000
    fake_api.eligible = False
    running = Running(settings, account)
    wait_for(lambda: running.stats.pending_wei is not None and running.stats.eligible is False)
    line = running.stats.line()
    stats = running.stop()
    assert "pending 1.234567 ILC" in line and "NOT ELIGIBLE" in line
    assert stats.as_dict()["pending_wei"] == "1234567000000000000"


def wait_for(check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


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


def test_stop_during_a_pull_submits_what_ran_and_hands_back_the_rest(
    settings: WorkerSettings,
    account: LocalAccount,
    fake_api: FakeApi,
    digits: npt.NDArray[np.float32],
) -> None:
    model = _model(settings)
    jobs = [make_assignment(model, {"input": digits[:64]}, job=i) for i in range(20)]
    fake_api.assignments = list(jobs)
    holder: list[Running] = []
    fake_api.on_pull = lambda: holder[0].event.set()  # stop arrives while the pull is answered
    fake_api.fail_next = {"/v1/work/results": [503]}  # and the first submit fails
    wide = settings.model_copy(update={"pull_batch": 20, "max_held": 20})
    holder.append(Running(wide, account))
    holder[0].thread.join(timeout=30)
    stats = holder[0].stop()
    posted = [p["job_id"] for p in fake_api.posted]
    # the first chunk was running: it finished and was submitted after a retry; the second
    # had not started: handed back
    assert posted == [a["job_id"] for a in jobs[:MAX_CHUNK]]
    assert fake_api.released == [a["job_id"] for a in jobs[MAX_CHUNK:]]
    assert (stats.done, stats.handed_back, stats.errors) == (MAX_CHUNK, 20 - MAX_CHUNK, 0)
    assert fake_api.count("POST", "/v1/work/results") == 2


def test_refused_sign_in_is_fatal(
    settings: WorkerSettings, account: LocalAccount, fake_api: FakeApi
) -> None:
    fake_api.fail_next = {"/v1/auth/token": [403]}
    running = Running(settings, account)
    running.thread.join(timeout=10)
    with pytest.raises(AuthRefused) as caught:
        running.stop()
    assert caught.value.status == 403
