"""The API decides payments and eligibility from the chain index, never from a chain call
per request: a client pays at once after depositing (its request catches the index up), a
worker's stake change reaches scheduling through the index within the catch-up interval and
not before, and a key registered a moment ago is known at its first pull."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from api_harness import ApiEnv, Contributor, samples
from eth_account import Account

from inferledger.demo import dev_keys
from ledger.chain.catchup import CatchUp
from ledger.db import session_scope
from ledger.models import Worker
from protocol.eip712 import sign_registration

NEW_CLIENT_KEY = dev_keys(11)[10]  # no other test deposits with it


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _eligible(env: ApiEnv, worker: str) -> bool:
    with session_scope(env.ctx.engine) as session:
        row = session.get(Worker, worker)
        assert row is not None
        return row.eligible


def test_api_index_a_client_pays_right_after_depositing(ready: ApiEnv) -> None:
    env = ready
    price = env.manifest.price_wei(2)
    refused = env.http.post("/v1/jobs", json=env.next_body(samples(2), key=NEW_CLIENT_KEY))
    assert refused.status_code == 402, refused.text  # nothing deposited yet
    env.fund_and_deposit(NEW_CLIENT_KEY, price)
    job = env.submit_job(samples(2), key=NEW_CLIENT_KEY)  # at once: no waiting for the index
    assert job["price_wei"] == str(price)
    balance = env.balance(str(Account.from_key(NEW_CLIENT_KEY).address))
    assert balance["deposited_wei"] == balance["held_wei"] == str(price)


def test_api_index_stake_changes_reach_scheduling_through_the_index(ready: ApiEnv) -> None:
    env = ready
    clock = Clock()
    env.ctx.catch_up = CatchUp(env.ctx.index, min_interval_s=1.0, clock=clock)
    leaving = env.contributors[0]
    env.pull(leaving)  # the index catches up here
    assert _eligible(env, leaving.worker)
    who = env.actor(leaving.key)
    registry = who.registry.functions
    who.transact(registry.requestUnbond(registry.stakeOf(who.address).call()), "requestUnbond")
    assert not registry.isEligible(leaving.worker).call()  # on chain at once

    env.pull(leaving)  # within the interval: the index is as it was, the chain is not asked
    assert _eligible(env, leaving.worker)
    clock.now += 1.0
    env.pull(leaving)  # the next catch-up brings the unbond
    assert not _eligible(env, leaving.worker)
    for _ in range(4):
        job = env.submit_job(samples(1))
        assert leaving not in env.assigned(job["job_id"])


def test_api_index_a_key_registered_a_moment_ago_is_eligible_at_once(ready: ApiEnv) -> None:
    env = ready
    clock = Clock()
    catch_up = CatchUp(env.ctx.index, min_interval_s=1.0, clock=clock)
    env.ctx.catch_up = catch_up
    owner = env.contributors[1]
    env.pull(owner)  # the shared key "eligibility" caught up just now
    device = Account.create()
    who = env.actor(owner.key)
    deadline = int(time.time()) + 600
    sig = sign_registration(
        env.deployment.registry_domain, device.address, who.address, deadline, bytes(device.key)
    )
    who.transact(who.registry.functions.registerWorker(device.address, deadline, sig), "register")
    newcomer = Contributor(owner.key, owner.address, device)
    newcomer.token = env.sign_in(device)  # sign-in finds the key on chain
    assert env.pull(newcomer) == []
    assert _eligible(env, device.address)  # a catch-up of its own found the registration
