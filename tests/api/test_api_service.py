"""Service routes (health, models, chain), unknown routes and methods, and the request body
limit, by Content-Length and counted over a streamed body that has none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import ApiEnv, samples
from fastapi.testclient import TestClient

import api.deps
import api.main
from ledger.config import get_settings

LIMIT = 4096


def test_healthz(env: ApiEnv) -> None:
    r = env.http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_models_list_digits_cnn_with_its_price_as_a_string(env: ApiEnv) -> None:
    r = env.http.get("/v1/models")
    assert r.status_code == 200, r.text
    assert sorted(m["name"] for m in r.json()) == ["digits-cnn", "minilm-l6"]
    (model,) = [m for m in r.json() if m["name"] == "digits-cnn"]
    assert model["model_hash"] == "0x" + env.manifest.sha256
    assert model["name"] == "digits-cnn"
    assert model["price_per_row_wei"] == "1000000000000000"
    assert isinstance(model["price_per_row_wei"], str)
    assert model["max_batch_rows"] == env.manifest.max_batch_rows
    assert model["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8]}]
    assert model["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}]
    assert model["input_kind"] == "tensor" and model["text"] is None and model["dims"] == {}
    assert model["batch_invariant"] is True


def test_chain_names_the_deployment(env: ApiEnv) -> None:
    r = env.http.get("/v1/chain")
    assert r.status_code == 200, r.text
    d = env.deployment
    assert r.json() == {
        "chain_id": d.chain_id,
        "token": d.token,
        "vault": d.vault,
        "registry": d.registry,
        "settlement": d.settlement,
    }
    assert d.chain_id == env.admin.w3.eth.chain_id


def test_unknown_routes_and_methods(env: ApiEnv) -> None:
    r = env.http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = env.http.delete("/v1/jobs")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


@pytest.fixture(scope="module")
def limited(env: ApiEnv) -> Iterator[TestClient]:
    """The same API built with a body limit of ``LIMIT`` bytes (read from the environment)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERLEDGER_MAX_BODY_BYTES", str(LIMIT))
        get_settings.cache_clear()
        app = api.main.create_app()
    get_settings.cache_clear()
    app.dependency_overrides[api.deps.get_context] = lambda: env.ctx
    with TestClient(app) as http:
        yield http


def check_too_large(r: Any) -> None:
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "body_too_large"


def _big_body(env: ApiEnv) -> bytes:
    body = json.dumps(env.next_body(samples(8))).encode()  # 8 rows: about 3 KB of base64
    body += b" " * (LIMIT + 1 - len(body))  # JSON allows trailing whitespace
    assert len(body) > LIMIT
    return body


def test_a_body_within_the_limit_goes_through(env: ApiEnv, limited: TestClient) -> None:
    env.sign_in_all()
    body = json.dumps(env.next_body(samples(1))).encode()
    assert len(body) < LIMIT
    r = limited.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text


def test_a_body_over_the_limit_by_content_length(env: ApiEnv, limited: TestClient) -> None:
    before = env.balance()
    r = limited.post(
        "/v1/jobs", content=_big_body(env), headers={"content-type": "application/json"}
    )
    check_too_large(r)
    assert env.balance() == before


def test_a_streamed_body_over_the_limit(env: ApiEnv, limited: TestClient) -> None:
    before = env.balance()
    body = _big_body(env)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    r = limited.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.request.headers.get("transfer-encoding") == "chunked"
    check_too_large(r)
    assert env.balance() == before


def test_a_streamed_body_within_the_limit_goes_through(env: ApiEnv, limited: TestClient) -> None:
    body = json.dumps(env.next_body(samples(1))).encode()

    def chunks() -> Iterator[bytes]:
        yield body[:100]
        yield body[100:]

    r = limited.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text


def test_results_over_the_limit_are_refused(env: ApiEnv, limited: TestClient) -> None:
    c = env.contributors[0]
    payload = json.dumps({"results": [{"job_id": "0x" + "00" * 32, "pad": "x" * LIMIT}]}).encode()
    r = limited.post(
        "/v1/work/results",
        content=payload,
        headers={**c.headers, "content-type": "application/json"},
    )
    check_too_large(r)

    def chunks() -> Iterator[bytes]:
        yield payload[: LIMIT // 2]
        yield payload[LIMIT // 2 :]

    r = limited.post(
        "/v1/work/results",
        content=chunks(),
        headers={**c.headers, "content-type": "application/json"},
    )
    check_too_large(r)


def test_the_default_app_limit_is_a_mebibyte(env: ApiEnv) -> None:
    body = b'{"address": "' + b"0" * (1 << 20) + b'"}'
    r = env.http.post(
        "/v1/auth/challenge", content=body, headers={"content-type": "application/json"}
    )
    check_too_large(r)
