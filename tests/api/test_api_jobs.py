"""Paid jobs: a voucher-backed submission holds the price and assigns replicas; every refusal
has a stable code and leaves the client's balance, holds and voucher as they were."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from api_harness import CLIENT_DEPOSIT_WEI, TOKEN, ApiEnv, samples, wire
from eth_account import Account
from fastapi import FastAPI
from fastapi.testclient import TestClient

from inferledger.demo import dev_keys
from protocol.eip712 import job_id

SMALL_CLIENT_DEPOSIT_WEI = 10 * 10**15  # ten rows


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    """Workers signed in (seen recently and eligible), so jobs can be assigned."""
    env.sign_in_all()
    return env


@pytest.fixture(scope="module")
def small_client(ready: ApiEnv) -> str:
    """Another client (dev key 9) whose deposit covers ten rows."""
    small = dev_keys(10)[9]
    ready.fund_and_deposit(small, SMALL_CLIENT_DEPOSIT_WEI)
    return small


def check_refused(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.fixture
def unchanged(ready: ApiEnv) -> Iterator[None]:
    """The client's balance is the same after the test as before it."""
    before = ready.balance()
    yield
    assert ready.balance() == before


def test_a_job_is_accepted_for_work_and_holds_its_price(ready: ApiEnv) -> None:
    env = ready
    before = env.balance()
    inputs = samples(3)
    cumulative = int(before["max_voucher_wei"]) + env.manifest.price_wei(3)
    body = env.job_body(inputs, cumulative)
    r = env.http.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["job_id"] == "0x" + job_id(env.deployment.vault, env.client, cumulative).hex()
    assert job["status"] == "pending"
    assert job["client"] == env.client
    assert job["rows"] == 3
    assert job["price_wei"] == str(env.manifest.price_wei(3))
    assert job["voucher_cumulative_wei"] == str(cumulative)
    assert job["model_hash"] == env.model_hash
    assert job["outputs"] is None and job["result_hash"] is None and job["attestations"] == []

    after = env.balance()
    assert after["deposited_wei"] == str(CLIENT_DEPOSIT_WEI)
    assert int(after["held_wei"]) == int(before["held_wei"]) + env.manifest.price_wei(3)
    assert int(after["available_wei"]) == CLIENT_DEPOSIT_WEI - int(after["held_wei"])
    assert after["max_voucher_wei"] == str(cumulative)
    assert after["charged_wei"] == "0"
    assert len(env.assigned(job["job_id"])) == env.ctx.settings.replicas

    # a retry of the same request names the same job and holds nothing more
    again = env.http.post("/v1/jobs", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == job
    assert env.balance() == after

    got = env.http.get(f"/v1/jobs/{job['job_id']}")
    assert got.status_code == 200, got.text
    assert got.json() == job
    assert env.http.get(f"/v1/jobs/{job['job_id'].upper().replace('0X', '0x')}").json() == job


def test_a_voucher_reused_for_other_inputs_is_refused(ready: ApiEnv) -> None:
    env = ready
    job = env.submit_job(samples(1, start=10))
    held = env.balance()
    reused = env.job_body(samples(1, start=11), int(job["voucher_cumulative_wei"]))
    check_refused(env.http.post("/v1/jobs", json=reused), 409, "voucher_reused")
    assert env.balance() == held


def test_an_unknown_job_is_not_found(ready: ApiEnv) -> None:
    check_refused(ready.http.get("/v1/jobs/0x" + "ab" * 32), 404, "not_found")
    check_refused(ready.http.get("/v1/jobs/nonsense"), 404, "not_found")


def test_an_unknown_model_is_refused(ready: ApiEnv, unchanged: None) -> None:
    body = ready.next_body(samples(1))
    body["model"] = "0x" + "12" * 32
    check_refused(ready.http.post("/v1/jobs", json=body), 400, "unknown_model")


def _set_data(t: dict[str, Any], raw: bytes) -> None:
    t["data"] = base64.b64encode(raw).decode()


def _nan_first(t: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(t["data"]))
    raw[0:4] = np.array([np.nan], dtype="<f4").tobytes()
    _set_data(t, bytes(raw))


def _replace_inputs(arrays: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        body["inputs"] = wire(arrays)

    return edit


TWO = samples(2)["input"]
# how -> an edit of a valid body of two rows that spoils its tensors
CORRUPT: dict[str, Callable[[dict[str, Any]], None]] = {
    "dtype": lambda b: b["inputs"]["input"].update(dtype="float16"),
    "wrong-dtype": _replace_inputs({"input": TWO.astype(np.float64)}),
    "short-data": lambda b: _set_data(
        b["inputs"]["input"], base64.b64decode(b["inputs"]["input"]["data"])[:-4]
    ),
    "not-base64": lambda b: b["inputs"]["input"].update(data="!!!" + b["inputs"]["input"]["data"]),
    "shape": lambda b: b["inputs"]["input"].update(shape=[2, 64]),
    "negative-dim": lambda b: b["inputs"]["input"].update(shape=[-2, 1, 8, 8]),
    "nan": lambda b: _nan_first(b["inputs"]["input"]),
    "huge": lambda b: b["inputs"]["input"].update(shape=[10**9, 1, 8, 8]),
    "not-an-object": lambda b: b["inputs"].update(input=[1, 2, 3]),
    "wrong-name": lambda b: b.update(inputs={"image": b["inputs"]["input"]}),
    "extra-input": lambda b: b["inputs"].update(extra=b["inputs"]["input"]),
    "no-inputs": lambda b: b.update(inputs={}),
    "too-many-rows": _replace_inputs(samples(65)),
    "zero-rows": _replace_inputs({"input": np.zeros((0, 1, 8, 8), dtype=np.float32)}),
}


@pytest.mark.parametrize("how", list(CORRUPT))
def test_a_malformed_tensor_is_refused(ready: ApiEnv, unchanged: None, how: str) -> None:
    body = ready.next_body(samples(2))
    CORRUPT[how](body)
    check_refused(ready.http.post("/v1/jobs", json=body), 400, "invalid_tensor")


def test_a_voucher_signed_by_another_key_is_refused(ready: ApiEnv, unchanged: None) -> None:
    env = ready
    body = env.next_body(samples(1))
    cumulative = int(body["voucher"]["cumulative_amount_wei"])
    forged = env.job_body(
        samples(1), cumulative, key="0x" + bytes(Account.create().key).hex(), client=env.client
    )
    check_refused(env.http.post("/v1/jobs", json=forged), 400, "voucher_signature")


def test_a_voucher_whose_fields_were_changed_is_refused(ready: ApiEnv, unchanged: None) -> None:
    env = ready
    body = env.next_body(samples(1))
    body["voucher"]["cumulative_amount_wei"] = str(
        int(body["voucher"]["cumulative_amount_wei"]) + 1
    )
    check_refused(env.http.post("/v1/jobs", json=body), 400, "voucher_signature")
    body = env.next_body(samples(1))
    body["voucher"]["expiry"] += 1
    check_refused(env.http.post("/v1/jobs", json=body), 400, "voucher_signature")


@pytest.mark.parametrize(
    "signature",
    ["0x" + "00" * 65, "0x" + "ff" * 65],
    ids=["zeros", "high-s"],
)
def test_a_voucher_signature_that_does_not_parse_is_refused(
    ready: ApiEnv, unchanged: None, signature: str
) -> None:
    body = ready.next_body(samples(1))
    body["signature"] = signature
    check_refused(ready.http.post("/v1/jobs", json=body), 400, "voucher_signature")


def test_a_voucher_that_expires_too_soon_is_refused(ready: ApiEnv, unchanged: None) -> None:
    env = ready
    last = int(env.balance()["max_voucher_wei"])
    body = env.job_body(samples(1), last + env.manifest.price_wei(1), expiry=1)
    check_refused(env.http.post("/v1/jobs", json=body), 400, "voucher_expired")


def test_a_zero_voucher_is_refused(ready: ApiEnv, unchanged: None) -> None:
    check_refused(
        ready.http.post("/v1/jobs", json=ready.job_body(samples(1), 0)), 400, "voucher_amount"
    )


def test_a_voucher_not_above_the_last_is_refused(ready: ApiEnv) -> None:
    env = ready
    env.submit_job(samples(1, start=20))
    before = env.balance()
    last = int(before["max_voucher_wei"])
    for cumulative in (last - 1, 1):  # not the amount of any earlier job
        r = env.http.post("/v1/jobs", json=env.job_body(samples(1, start=21), cumulative))
        check_refused(r, 409, "voucher_not_increasing")
    # the last voucher again, for other inputs, names the last job: reused, not a new job
    r = env.http.post("/v1/jobs", json=env.job_body(samples(1, start=21), last))
    check_refused(r, 409, "voucher_reused")
    assert env.balance() == before


def test_a_voucher_below_what_is_owed_is_refused(ready: ApiEnv) -> None:
    env = ready
    env.submit_job(samples(1, start=30))
    before = env.balance()
    owed = int(before["held_wei"]) + int(before["charged_wei"]) + env.manifest.price_wei(2)
    # above the last voucher, but it does not cover what is held plus this job's price
    cumulative = owed - 1
    assert cumulative > int(before["max_voucher_wei"])
    r = env.http.post("/v1/jobs", json=env.job_body(samples(2, start=31), cumulative))
    check_refused(r, 400, "voucher_too_low")
    assert env.balance() == before
    # exactly what is owed is enough
    r = env.http.post("/v1/jobs", json=env.job_body(samples(2, start=31), owed))
    assert r.status_code == 202, r.text


def test_a_job_beyond_the_deposit_is_refused(ready: ApiEnv, small_client: str) -> None:
    env = ready
    address = str(Account.from_key(small_client).address)
    before = env.balance(address)
    assert before["max_voucher_wei"] == "0"
    body = env.next_body(samples(11), key=small_client)  # eleven rows, ten paid for
    check_refused(env.http.post("/v1/jobs", json=body), 402, "insufficient_deposit")
    after = env.balance(address)
    assert after["held_wei"] == "0" and after["max_voucher_wei"] == "0"
    assert after["available_wei"] == before["available_wei"]
    # the refused voucher burnt nothing: a job the deposit covers goes through with a lower one
    job = env.submit_job(samples(10), key=small_client)
    assert job["price_wei"] == str(SMALL_CLIENT_DEPOSIT_WEI)
    full = env.balance(address)
    assert full["deposited_wei"] == full["held_wei"] == str(SMALL_CLIENT_DEPOSIT_WEI)
    assert full["available_wei"] == "0"
    check_refused(
        env.http.post("/v1/jobs", json=env.next_body(samples(1), key=small_client)),
        402,
        "insufficient_deposit",
    )
    assert env.balance(address) == full


def test_a_client_that_never_deposited_is_refused(ready: ApiEnv) -> None:
    env = ready
    stranger = "0x" + bytes(Account.create().key).hex()
    body = env.job_body(samples(1), env.manifest.price_wei(1), key=stranger)
    check_refused(env.http.post("/v1/jobs", json=body), 402, "insufficient_deposit")
    balance = env.balance(body["voucher"]["client"])
    assert balance == {
        "address": body["voucher"]["client"],
        "deposited_wei": "0",
        "available_wei": "0",
        "held_wei": "0",
        "charged_wei": "0",
        "max_voucher_wei": "0",
    }


def _voucher(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b["voucher"].update(fields)


# how -> an edit of a valid body that breaks its schema
INVALID: dict[str, Callable[[dict[str, Any]], None]] = {
    "no-voucher": lambda b: b.pop("voucher"),
    "amount-as-number": lambda b: b["voucher"].update(
        cumulative_amount_wei=int(b["voucher"]["cumulative_amount_wei"])
    ),
    "amount-negative": _voucher(cumulative_amount_wei="-1"),
    "amount-too-long": _voucher(cumulative_amount_wei="9" * 79),
    "amount-hex": _voucher(cumulative_amount_wei="0x10"),
    "expiry-negative": _voucher(expiry=-1),
    "expiry-huge": _voucher(expiry=2**64),
    "client-not-address": _voucher(client="0x1234"),
    "model-not-hash": lambda b: b.update(model="digits-cnn"),
    "signature-short": lambda b: b.update(signature="0x1234"),
    "inputs-a-list": lambda b: b.update(inputs=[b["inputs"]["input"]]),
}
JSON = {"content-type": "application/json"}


def _invalid(env: ApiEnv, how: str) -> Any:
    body = env.next_body(samples(1))
    if how == "not-an-object":
        return env.http.post("/v1/jobs", json=[body])
    if how == "not-json":
        return env.http.post("/v1/jobs", content=b"{not json", headers=JSON)
    if how == "empty":
        return env.http.post("/v1/jobs", content=b"", headers=JSON)
    INVALID[how](body)
    return env.http.post("/v1/jobs", json=body)


@pytest.mark.parametrize("how", [*INVALID, "not-an-object", "not-json", "empty"])
def test_an_invalid_body_is_refused(ready: ApiEnv, unchanged: None, how: str) -> None:
    check_refused(_invalid(ready, how), 422, "invalid_body")


def test_an_amount_beyond_uint256_is_refused(ready: ApiEnv, unchanged: None) -> None:
    body = ready.next_body(samples(1))
    body["voucher"]["cumulative_amount_wei"] = str(2**256)
    r = ready.http.post("/v1/jobs", json=body)
    check_refused(r, 400, "voucher_amount")


def test_balance_of_a_malformed_address_is_refused(ready: ApiEnv) -> None:
    check_refused(ready.http.get("/v1/clients/0x1234"), 400, "invalid_address")


def test_amounts_travel_as_decimal_strings(ready: ApiEnv) -> None:
    balance = ready.balance()
    for name in ("deposited_wei", "available_wei", "held_wei", "charged_wei", "max_voucher_wei"):
        assert isinstance(balance[name], str) and balance[name].isdigit()
    assert int(balance["deposited_wei"]) == TOKEN


# --- the lean route (api.routes.clients.lean_submit_route) answers as FastAPI's would ------


def _same_answer(ready: ApiEnv, fastapi_only: TestClient, **request: Any) -> Any:
    lean = ready.http.post("/v1/jobs", **request)
    plain = fastapi_only.post("/v1/jobs", **request)
    assert (lean.status_code, lean.json()) == (plain.status_code, plain.json())
    assert lean.headers["content-type"] == plain.headers["content-type"]
    return lean


def test_the_lean_route_is_the_one_answering(ready: ApiEnv, fastapi_only: TestClient) -> None:
    assert isinstance(ready.http.app, FastAPI) and isinstance(fastapi_only.app, FastAPI)
    assert ready.http.app.router.routes[0].name == "submit_job_lean"
    assert all(getattr(r, "name", "") != "submit_job_lean" for r in fastapi_only.app.routes)
    assert "post" in ready.http.get("/openapi.json").json()["paths"]["/v1/jobs"]


@pytest.mark.parametrize("how", [*INVALID, "not-an-object"])
def test_the_lean_route_refuses_a_body_as_fastapi_does(
    ready: ApiEnv, fastapi_only: TestClient, unchanged: None, how: str
) -> None:
    body: Any = ready.next_body(samples(1))
    if how == "not-an-object":
        body = [body]
    else:
        INVALID[how](body)
    check_refused(_same_answer(ready, fastapi_only, json=body), 422, "invalid_body")


@pytest.mark.parametrize(
    "content, headers",
    [
        (b"{not json", JSON),
        (b"", JSON),
        (b"\xff\xfe", JSON),
        (b'{"model": 1}', {"content-type": "text/plain"}),
        (b'{"model": 1}', {"content-type": "application/problem+json; charset=utf-8"}),
        (b'{"model": 1}', {}),  # no Content-Type: FastAPI reads no JSON
    ],
)
def test_the_lean_route_refuses_bytes_as_fastapi_does(
    ready: ApiEnv, fastapi_only: TestClient, unchanged: None, content: bytes, headers: Any
) -> None:
    r = _same_answer(ready, fastapi_only, content=content, headers=headers)
    check_refused(r, 422, "invalid_body")


def test_the_lean_route_refuses_deep_nesting_as_fastapi_does(
    ready: ApiEnv, fastapi_only: TestClient, unchanged: None
) -> None:
    """Nested past the recursion limit (``protocol.recursion``): a 400 from both, no crash."""
    deep = b"[" * 100_000 + b"]" * 100_000
    check_refused(_same_answer(ready, fastapi_only, content=deep, headers=JSON), 400, "http_error")


def test_the_lean_route_refuses_a_voucher_as_fastapi_does(
    ready: ApiEnv, fastapi_only: TestClient, unchanged: None
) -> None:
    body = ready.next_body(samples(1))
    body["voucher"]["client"] = str(Account.create().address)  # signed by another key
    check_refused(_same_answer(ready, fastapi_only, json=body), 400, "voucher_signature")
    body = ready.next_body(samples(1))
    body["voucher"]["cumulative_amount_wei"] = str(2**256)
    check_refused(_same_answer(ready, fastapi_only, json=body), 400, "voucher_amount")


def test_the_lean_route_admits_and_retries_as_fastapi_does(
    ready: ApiEnv, fastapi_only: TestClient
) -> None:
    """A job made by one route, then retried on the other, gets the same job back (202,
    then 200), both ways round."""
    for first, second in ((ready.http, fastapi_only), (fastapi_only, ready.http)):
        body = ready.next_body(samples(2))
        made = first.post("/v1/jobs", json=body)
        assert made.status_code == 202, made.text
        again = second.post("/v1/jobs", json=body)
        assert again.status_code == 200, again.text
        assert again.json() == made.json()
        assert (
            made.json()["job_id"]
            == "0x"
            + job_id(
                ready.deployment.vault, ready.client, int(body["voucher"]["cumulative_amount_wei"])
            ).hex()
        )
