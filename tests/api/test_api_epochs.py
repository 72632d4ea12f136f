"""Audit routes: nothing before the first epoch; after one is closed and posted, the file
whose keccak256 is on chain and Merkle proofs (earnings and results) that verify against the
roots on chain, with protocol.merkle and with OpenZeppelin's own @openzeppelin/merkle-tree
(``node tests/protocol/oz_verify.js``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from api_harness import ApiEnv, samples
from eth_account import Account
from eth_utils import keccak

from ledger.epochs import close_epoch
from protocol import epochfile, merkle
from protocol.contracts import EpochRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
OZ_VERIFY = REPO_ROOT / "tests" / "protocol" / "oz_verify.js"


@pytest.fixture(scope="module")
def ready(env: ApiEnv) -> ApiEnv:
    env.sign_in_all()
    return env


def _not_found(r: Any) -> None:
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"


def _openzeppelin_verifies(checks: list[dict[str, Any]]) -> list[bool]:
    """``StandardMerkleTree.verify(root, types, value, proof)`` of each, run by Node."""
    node = shutil.which("node")
    assert node is not None, "node is needed to verify proofs with @openzeppelin/merkle-tree"
    done = subprocess.run(
        [node, str(OZ_VERIFY)],
        input=json.dumps(checks),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    verdicts: list[bool] = json.loads(done.stdout)
    return verdicts


def check_proofs_verify_with_openzeppelin(
    env: ApiEnv, record: EpochRecord, doc: dict[str, Any]
) -> None:
    """Every proof the API issues for epoch 1 (each earnings leaf, each accepted job's
    result) verifies with OpenZeppelin's library against the root posted on chain; the same
    proof with the amount or the result changed does not."""
    checks, expected = [], []
    for leaf in doc["leaves"]:
        issued = env.http.get(f"/v1/epochs/1/proofs/{leaf['account']}").json()
        value = [issued["account"], issued["cumulative_wei"]]
        for amount, verifies in ((issued["cumulative_wei"], True), ("1", False)):
            checks.append(
                {
                    "root": "0x" + record.root.hex(),
                    "types": merkle.EARNINGS_TYPES,
                    "value": [value[0], amount],
                    "proof": issued["proof"],
                }
            )
            expected.append(verifies)
    accepted = [j for j in doc["jobs"] if j["status"] == "accepted"]
    for job in accepted:
        issued = env.http.get(f"/v1/epochs/1/results/{job['job_id']}").json()
        assert issued["results_root"] == "0x" + record.results_root.hex()
        fields = ["job_id", "model_hash", "input_hash", "fingerprint", "result_hash"]
        value = [issued[f] for f in fields]
        for result, verifies in ((value[4], True), ("0x" + "ee" * 32, False)):
            checks.append(
                {
                    "root": issued["results_root"],
                    "types": merkle.RESULTS_TYPES,
                    "value": [*value[:4], result],
                    "proof": issued["proof"],
                }
            )
            expected.append(verifies)
    assert len(expected) == 2 * (len(doc["leaves"]) + len(accepted)) >= 8
    assert _openzeppelin_verifies(checks) == expected


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

    check_proofs_verify_with_openzeppelin(env, record, doc)

    # an account that earned nothing, an address that is not one, an epoch not posted
    _not_found(env.http.get(f"/v1/epochs/1/proofs/{Account.create().address}"))
    r = env.http.get("/v1/epochs/1/proofs/0x1234")
    assert r.status_code == 400 and r.json()["error"] == "invalid_address"
    _not_found(env.http.get("/v1/epochs/2/file"))
    _not_found(env.http.get(f"/v1/epochs/2/proofs/{someone}"))
    r = env.http.get("/v1/epochs/one/file")
    assert r.status_code == 422 and r.json()["error"] == "invalid_body"
