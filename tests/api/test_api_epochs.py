"""Audit routes: nothing before the first epoch; after one is closed and posted, the file
whose keccak256 is on chain and Merkle proofs that verify against the root on chain."""

from __future__ import annotations

from typing import Any

import pytest
from api_harness import ApiEnv, samples
from eth_account import Account
from eth_utils import keccak

from ledger.epochs import close_epoch
from protocol import epochfile, merkle
from protocol.contracts import EpochRecord


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _not_found(r: Any) -> None:
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"


def test_epochs_and_proofs(ready: ApiEnv) -> None:
    env = ready
    someone = env.contributors[0].address
    # before any epoch
    assert env.http.get("/v1/epochs").json() == []
    _not_found(env.http.get("/v1/epochs/1"))
    _not_found(env.http.get("/v1/epochs/1/file"))
    _not_found(env.http.get(f"/v1/epochs/1/proofs/{someone}"))
    assert close_epoch(env.ctx) is None  # nothing decided yet: no epoch

    jobs = [env.run_job(samples(2, start=i * 2)) for i in range(2)]
    paid = {v["contributor"] for job in jobs for v in job["attestations"]}
    outcome = close_epoch(env.ctx)
    assert outcome is not None and outcome.number == 1 and outcome.jobs == 2

    chain = env.ctx.chain
    record = EpochRecord.from_call(chain.call(chain.settlement.functions.epochs(1), "epochs"))
    root_on_chain, file_hash_on_chain = record.root, record.file_hash

    r = env.http.get("/v1/epochs/1/file")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    raw = r.content
    assert keccak(raw) == file_hash_on_chain
    doc = epochfile.parse(raw)
    assert doc["epoch"] == 1 and doc["root"] == "0x" + root_on_chain.hex()
    assert {j["job_id"] for j in doc["jobs"]} == {j["job_id"] for j in jobs}

    epoch = env.http.get("/v1/epochs/1").json()
    assert epoch["status"] == "posted" and epoch["jobs"] == 2
    assert epoch["root"] == "0x" + root_on_chain.hex()
    assert epoch["file_hash"] == "0x" + file_hash_on_chain.hex()
    assert [e["number"] for e in env.http.get("/v1/epochs").json()] == [1]

    leaves = {leaf["account"]: int(leaf["cumulative_wei"]) for leaf in doc["leaves"]}
    assert set(leaves) == paid
    for account in paid:
        for spelled in (account, account.lower()):
            r = env.http.get(f"/v1/epochs/1/proofs/{spelled}")
            assert r.status_code == 200, r.text
            proof = r.json()
            assert proof["epoch"] == 1 and proof["account"] == account
            assert int(proof["cumulative_wei"]) == leaves[account] > 0
            assert proof["root"] == "0x" + root_on_chain.hex()
            steps = [bytes.fromhex(p[2:]) for p in proof["proof"]]
            assert merkle.verify(root_on_chain, account, int(proof["cumulative_wei"]), steps)
            assert not merkle.verify(
                root_on_chain, account, int(proof["cumulative_wei"]) + 1, steps
            )

    # an account that earned nothing, an address that is not one, an epoch not posted
    _not_found(env.http.get(f"/v1/epochs/1/proofs/{Account.create().address}"))
    r = env.http.get("/v1/epochs/1/proofs/0x1234")
    assert r.status_code == 400 and r.json()["error"] == "invalid_address"
    _not_found(env.http.get("/v1/epochs/2/file"))
    _not_found(env.http.get(f"/v1/epochs/2/proofs/{someone}"))
    r = env.http.get("/v1/epochs/one/file")
    assert r.status_code == 422 and r.json()["error"] == "invalid_body"
