"""Text jobs: a client sends texts to minilm-l6, the API tokenizes them with the pinned
tokenizer, the job's inputs and input hash are the tokens, workers return embeddings like any
output. Texts over the limits and the wrong kind of input are refused before anything is
held or assigned."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from api_harness import TEXT_MODEL_DIR, ApiEnv, samples, wire

from inferledger.client import ApiError, InferenceClient
from protocol import hashing, tensors, text
from protocol.eip712 import job_id
from protocol.manifest import Manifest, load_manifest

TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


@pytest.fixture(scope="module")
def minilm() -> Manifest:
    return load_manifest(TEXT_MODEL_DIR)


def text_body(env: ApiEnv, manifest: Manifest, texts: list[Any]) -> dict[str, Any]:
    """A body paying the next voucher for ``texts`` to ``manifest``'s model."""
    last = int(env.balance()["max_voucher_wei"])
    price = manifest.price_wei(max(len(texts), 1))
    body = env.job_body({}, last + price, model="0x" + manifest.sha256)
    del body["inputs"]
    body["texts"] = texts
    return body


def check_refused(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"] == code, r.json()
    return str(r.json()["detail"])


@pytest.fixture
def unchanged(ready: ApiEnv) -> Iterator[None]:
    """Nothing held, charged or signed for: the client's figures are as they were."""
    before = ready.balance()
    yield
    assert ready.balance() == before


def test_models_list_the_text_model_with_its_limits(ready: ApiEnv, minilm: Manifest) -> None:
    r = ready.http.get("/v1/models")
    assert r.status_code == 200, r.text
    (model,) = [m for m in r.json() if m["name"] == "minilm-l6"]
    assert model["model_hash"] == "0x" + minilm.sha256
    assert model["input_kind"] == "text"
    assert model["text"] == {
        "max_chars": 4096,
        "max_tokens": 256,
        "tokenizer_sha256": "0x" + minilm.text.tokenizer_sha256,  # type: ignore[union-attr]
    }
    assert model["dims"] == {"tokens": {"min": 1, "max": 256}}
    assert model["inputs"][0] == {
        "name": "input_ids",
        "dtype": "int64",
        "shape": [-1, "tokens"],
        "range": [0, 30521],
    }
    assert model["outputs"] == [
        {"name": "sentence_embedding", "dtype": "float32", "shape": [-1, 384]}
    ]
    assert model["price_per_row_wei"] == str(minilm.price_per_row_wei)
    assert model["batch_invariant"] is False


def test_a_text_job_runs_end_to_end(ready: ApiEnv, minilm: Manifest) -> None:
    env = ready
    before = env.balance()
    body = text_body(env, minilm, TEXTS)
    r = env.http.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    cumulative = int(body["voucher"]["cumulative_amount_wei"])
    assert job["job_id"] == "0x" + job_id(env.deployment.vault, env.client, cumulative).hex()
    assert job["model_hash"] == "0x" + minilm.sha256 and job["rows"] == len(TEXTS)
    assert job["price_wei"] == str(minilm.price_wei(len(TEXTS)))
    tokens = text.encode(minilm, TEXTS)
    assert job["input_hash"] == "0x" + hashing.input_hash(tokens).hex()
    held = env.balance()
    assert int(held["held_wei"]) == int(before["held_wei"]) + minilm.price_wei(len(TEXTS))

    again = env.http.post("/v1/jobs", json=body)  # a retry: the same job, held once
    assert again.status_code == 200 and again.json() == job
    assert env.balance() == held

    workers = env.assigned(job["job_id"])
    assert len(workers) == env.ctx.settings.replicas
    for c in workers:
        (mine,) = [a for a in env.pull(c) if a["job_id"] == job["job_id"]]
        sent = {k: tensors.decode(v, max_bytes=1 << 20) for k, v in mine["inputs"].items()}
        assert sorted(sent) == sorted(tokens)
        assert all(sent[k].tobytes() == tokens[k].tobytes() for k in tokens)  # tokens, no text
        (result,) = env.post_results(c, [env.result_item(mine, c.device)])
        assert result["status"] == "accepted", result
    assert env.reconcile().accepted >= 1

    done = env.http.get(f"/v1/jobs/{job['job_id']}").json()
    assert done["status"] == "accepted" and len(done["attestations"]) == len(workers)
    embedding = tensors.decode(done["outputs"]["sentence_embedding"], max_bytes=1 << 20)
    assert embedding.shape == (len(TEXTS), 384) and embedding.dtype == np.float32
    assert np.allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-6)
    cos = embedding @ embedding.T
    assert cos[0, 1] > cos[0, 2] + 0.4  # eating food ~ eating bread, not the movie
    assert int(env.balance()["charged_wei"]) == int(before["charged_wei"]) + minilm.price_wei(
        len(TEXTS)
    )


def test_a_text_over_the_token_limit_is_refused(
    ready: ApiEnv, minilm: Manifest, unchanged: None
) -> None:
    body = text_body(ready, minilm, ["fine", " ".join(["word"] * 255)])  # 257 tokens
    detail = check_refused(ready.http.post("/v1/jobs", json=body), 400, "text_too_long")
    assert "text 1 has 257 tokens" in detail and "at most 256" in detail
    cumulative = int(body["voucher"]["cumulative_amount_wei"])
    jid = "0x" + job_id(ready.deployment.vault, ready.client, cumulative).hex()
    check_refused(ready.http.get(f"/v1/jobs/{jid}"), 404, "not_found")  # nothing scheduled


def test_a_text_over_the_character_limit_is_refused(
    ready: ApiEnv, minilm: Manifest, unchanged: None
) -> None:
    body = text_body(ready, minilm, ["x" * 4097])
    detail = check_refused(ready.http.post("/v1/jobs", json=body), 400, "text_too_long")
    assert "4097 characters" in detail


@pytest.mark.parametrize("count", [0, 33])
def test_no_texts_or_too_many_are_refused(
    ready: ApiEnv, minilm: Manifest, unchanged: None, count: int
) -> None:
    body = text_body(ready, minilm, ["hi"] * count)
    check_refused(ready.http.post("/v1/jobs", json=body), 400, "invalid_text")


def test_texts_for_a_tensor_model_are_refused(ready: ApiEnv, unchanged: None) -> None:
    body = ready.next_body(samples(1))
    del body["inputs"]
    body["texts"] = ["a digit"]
    detail = check_refused(ready.http.post("/v1/jobs", json=body), 400, "wrong_input_kind")
    assert "digits-cnn takes tensor input: send inputs only" in detail


def test_tensors_for_a_text_model_are_refused(
    ready: ApiEnv, minilm: Manifest, unchanged: None
) -> None:
    tokens = wire(text.encode(minilm, ["hello"]))
    body = text_body(ready, minilm, ["hello"])
    body["inputs"] = tokens  # tokens and texts both
    check_refused(ready.http.post("/v1/jobs", json=body), 400, "wrong_input_kind")
    del body["texts"]  # tokens alone
    detail = check_refused(ready.http.post("/v1/jobs", json=body), 400, "wrong_input_kind")
    assert "minilm-l6 takes text input: send texts only" in detail
    del body["inputs"]  # nothing at all
    check_refused(ready.http.post("/v1/jobs", json=body), 400, "wrong_input_kind")


@pytest.mark.parametrize("texts", [[1, 2], "one text", [None], [["nested"]]])
def test_texts_that_are_not_strings_are_refused(
    ready: ApiEnv, minilm: Manifest, unchanged: None, texts: Any
) -> None:
    body = text_body(ready, minilm, ["placeholder"])
    body["texts"] = texts
    check_refused(ready.http.post("/v1/jobs", json=body), 422, "invalid_body")


def test_the_client_library_submits_texts(ready: ApiEnv, minilm: Manifest) -> None:
    client = InferenceClient("http://testserver", ready.client_key)
    client.http = ready.http  # the API under test, in process
    before = int(ready.balance()["max_voucher_wei"])
    job = client.submit_texts("0x" + minilm.sha256, ["one text", "and another"])
    assert job["rows"] == 2 and job["status"] == "pending"
    assert int(job["voucher_cumulative_wei"]) == before + minilm.price_wei(2)
    assert (
        job["input_hash"]
        == "0x" + hashing.input_hash(text.encode(minilm, ["one text", "and another"])).hex()
    )
    with pytest.raises(ApiError) as refused:
        client.submit_texts("0x" + minilm.sha256, ["word " * 300])
    assert (refused.value.status, refused.value.code) == (400, "text_too_long")
