"""Per-key rate limits at the edge: a paying client (by its voucher) and a signed-in worker
(by its token) past their burst get 429 ``rate_limited`` with ``Retry-After``, nothing is
charged or changed, and other keys are unaffected."""

from __future__ import annotations

from typing import Any

from api_harness import ApiEnv, samples
from eth_account import Account

from inferledger.demo import dev_keys

BURST = 3
# refills one request in about 1000 s: nothing comes back during a test
API_SETTINGS = {"rate_limit_per_s": 0.001, "rate_limit_burst": BURST}
OTHER_CLIENT_KEY = dev_keys(10)[8]  # deposits only on this module's own contracts


def _assert_rate_limited(r: Any) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 1001


def test_rate_limit_a_client_past_its_burst_is_refused_and_charged_nothing(env: ApiEnv) -> None:
    env.sign_in_all()  # workers to take the jobs (signing in is not a worker request)
    for _ in range(BURST):
        env.submit_job(samples(1))
    before = env.balance()
    body = env.next_body(samples(1))
    r = env.http.post("/v1/jobs", json=body)
    _assert_rate_limited(r)
    assert env.balance() == before  # nothing held or charged, the voucher not taken
    # the refused voucher made no job: the same body later is a new job, not a retry
    assert env.balance()["max_voucher_wei"] != body["voucher"]["cumulative_amount_wei"]
    _assert_rate_limited(env.http.post("/v1/jobs", json=body))  # still past it


def test_rate_limit_another_client_is_unaffected(env: ApiEnv) -> None:
    env.fund_and_deposit(OTHER_CLIENT_KEY, env.manifest.price_wei(BURST))
    other = str(Account.from_key(OTHER_CLIENT_KEY).address)
    for _ in range(BURST):
        env.submit_job(samples(1), key=OTHER_CLIENT_KEY)
    assert env.balance(other)["held_wei"] == str(env.manifest.price_wei(BURST))


def test_rate_limit_a_worker_past_its_burst_is_refused(env: ApiEnv) -> None:
    env.sign_in_all()  # tokens anew: the limit is the key's, not the token's
    busy, other = env.contributors[0], env.contributors[1]
    for _ in range(BURST):
        assert env.http.get("/v1/work", headers=busy.headers).status_code == 200
    _assert_rate_limited(env.http.get("/v1/work", headers=busy.headers))
    _assert_rate_limited(
        env.http.post("/v1/work/results", json={"results": []}, headers=busy.headers)
    )
    # another worker key is unaffected; an unauthenticated request is 401, not 429
    assert env.http.get("/v1/work", headers=other.headers).status_code == 200
    r = env.http.get("/v1/work", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401, r.text
