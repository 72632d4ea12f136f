"""The client library (``inferledger.client``) against the real API over HTTP: voucher
bookkeeping across a restart and a rival process, every refused voucher as a typed error
that charges nothing, synchronous runs with a timeout, failed jobs free, and receipts whose
attestations and Merkle proofs the library verifies itself."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from api_harness import ApiEnv, answering, samples, served
from eth_account import Account

from inferledger.client import InferenceClient, raise_for
from inferledger.demo import dev_keys
from inferledger.errors import (
    JobFailed,
    JobTimeout,
    PaymentRequired,
    ReceiptInvalid,
    VoucherRefused,
)
from inferledger.receipts import verify_attestations, verify_result_proof
from ledger.db import session_scope
from ledger.epochs import close_epoch
from ledger.sweep import sweep
from protocol import tensors
from protocol.contracts import EpochRecord


@pytest.fixture(scope="module")
def api_url(env: ApiEnv) -> Iterator[str]:
    env.sign_in_all()
    with served(env.http.app) as url:
        yield url


@pytest.fixture
def client(env: ApiEnv, api_url: str) -> Iterator[InferenceClient]:
    with InferenceClient(api_url, env.client_key) as c:
        yield c


def test_client_recovers_its_voucher_total_after_a_restart(
    env: ApiEnv, api_url: str, client: InferenceClient
) -> None:
    price = env.manifest.price_wei(1)
    start = client.recover()
    for i in range(2):
        job = client.submit("digits-cnn", samples(1, start=i))
        assert int(job["voucher_cumulative_wei"]) == start + (i + 1) * price
    assert client.cumulative_wei == start + 2 * price

    with InferenceClient(api_url, env.client_key) as restarted:  # a new process, same key
        assert restarted.cumulative_wei is None
        job = restarted.submit("digits-cnn", samples(1, start=2))
        assert int(job["voucher_cumulative_wei"]) == start + 3 * price

    # the first client's total is stale: the API refuses its voucher, nothing is charged,
    # and the library reads the total again and pays with the next one
    job = client.submit("digits-cnn", samples(1, start=3))
    assert int(job["voucher_cumulative_wei"]) == start + 4 * price
    assert client.cumulative_wei == start + 4 * price
    balance = env.balance()
    assert int(balance["max_voucher_wei"]) == start + 4 * price


def _refused_body(env: ApiEnv, client: InferenceClient, how: str) -> dict[str, object]:
    """A job body of one row paying with a voucher spoilt in one way."""
    price = env.manifest.price_wei(1)
    last = int(env.balance()["max_voucher_wei"])
    payload = {"inputs": {"input": tensors.encode(samples(1)["input"])}}
    if how == "below-price":
        return client._signed(env.model_hash, payload, last + price - 1)
    if how == "expired":
        client.voucher_ttl_s = -60
        return client._signed(env.model_hash, payload, last + price)
    if how == "other-key":
        forger = InferenceClient("http://unused", "0x" + bytes(Account.create().key).hex())
        forger._deployment = client.deployment()
        body = forger._signed(env.model_hash, payload, last + price)
        body["voucher"]["client"] = client.address  # type: ignore[index]
        return body
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [
        ("below-price", 400, "voucher_too_low"),
        ("expired", 400, "voucher_expired"),
        ("other-key", 400, "voucher_signature"),
    ],
)
def test_a_refused_voucher_raises_its_code_and_charges_nothing(
    env: ApiEnv, client: InferenceClient, how: str, status: int, code: str
) -> None:
    client.recover()
    before = env.balance()
    body = _refused_body(env, client, how)
    with pytest.raises(VoucherRefused) as refused:
        raise_for(client.http.post("/v1/jobs", json=body))
    assert (refused.value.status, refused.value.code) == (status, code)
    assert env.balance() == before


def test_a_voucher_beyond_the_deposit_is_payment_required(env: ApiEnv, api_url: str) -> None:
    small = dev_keys(10)[9]
    env.fund_and_deposit(small, env.manifest.price_wei(10))  # ten rows
    with InferenceClient(api_url, small) as c:
        before = c.balance()
        with pytest.raises(PaymentRequired) as refused:
            c.submit("digits-cnn", samples(11))
        assert (refused.value.status, refused.value.code) == (402, "insufficient_deposit")
        assert c.balance() == before
        assert c.cumulative_wei == 0  # nothing signed away: the next voucher starts from zero
        job = c.submit("digits-cnn", samples(10))
        assert int(job["voucher_cumulative_wei"]) == env.manifest.price_wei(10)
        with pytest.raises(PaymentRequired):  # the deposit less what is owed covers nothing
            c.submit("digits-cnn", samples(1))


def test_run_returns_a_receipt_verified_now_and_proven_after_its_epoch(
    env: ApiEnv, client: InferenceClient
) -> None:
    with answering(env):
        receipt = client.run("digits-cnn", samples(2, start=40), timeout_s=30)
    assert receipt.status == "accepted" and receipt.proof is None and receipt.epoch is None
    assert len(receipt.attestations) == env.ctx.settings.replicas
    assert receipt.outputs()["logits"].shape == (2, 10)

    outcome = close_epoch(env.ctx)
    assert outcome is not None
    proven = client.receipt(receipt.job_id)
    assert proven.epoch == outcome.number and proven.proof is not None
    chain = env.ctx.chain
    record = EpochRecord.from_call(chain.call(chain.settlement.functions.epochs(outcome.number)))
    assert proven.proof["results_root"] == "0x" + record.results_root.hex()

    # what must not verify: another result under the same proof, a forged attestation
    other = copy.deepcopy(proven.job)
    other["result_hash"] = "0x" + "11" * 32
    with pytest.raises(ReceiptInvalid, match="does not lead"):
        verify_result_proof(other, proven.proof)
    forged = copy.deepcopy(proven.job)
    forged["attestations"][0]["worker"] = Account.create().address
    with pytest.raises(ReceiptInvalid, match="signed by"):
        verify_attestations(forged, client.deployment().registry_domain)


def test_submit_may_wait_for_the_decision(env: ApiEnv, client: InferenceClient) -> None:
    with answering(env):
        job = client.submit("digits-cnn", samples(1, start=60), wait_s=30)
    assert job["status"] == "accepted" and len(job["attestations"]) == env.ctx.settings.replicas
    assert client.receipt(job).status == "accepted"  # the answer verifies as a receipt


def test_a_job_that_times_out_costs_nothing(env: ApiEnv, client: InferenceClient) -> None:
    env.answer_all()  # nothing else in flight
    before = env.balance()
    job = client.submit("digits-cnn", samples(3, start=50))  # no device answers
    with pytest.raises(JobTimeout) as late:
        client.result(job["job_id"], timeout_s=0.2)
    assert late.value.job_id == job["job_id"] and late.value.status == "pending"
    assert int(env.balance()["held_wei"]) == int(before["held_wei"]) + int(job["price_wei"])

    with session_scope(env.ctx.engine) as session:  # the ledger gives up on it
        assert sweep(session, env.ctx, now=10**10).timed_out >= 1
    with pytest.raises(JobFailed) as failed:
        client.result(job["job_id"], timeout_s=5)
    assert failed.value.failure == "timeout"
    after = env.balance()
    assert after["charged_wei"] == before["charged_wei"]
    assert after["available_wei"] == before["available_wei"]
