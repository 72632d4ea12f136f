"""The demo's whole loop on real parts: a Hardhat node, Redis, a Celery worker and beat,
the API over HTTP, three device worker processes, a paying client, epochs settled on chain,
claims and an audit. The checks run while the system is still up.

Which assertion catches which breakage:
- consensus: ``check_consensus`` (every job accepted, two attestations from distinct
  contributors that recover to registered workers, and the result equals a local
  onnxruntime run hashed the protocol's way);
- payment: ``check_payment`` (the vault redeemed exactly requests x price from the client);
- settlement: ``check_settlement`` (each posted root and file hash equal the served file's);
- claim: ``check_claims`` (each contributor's token balance rose by its leaf, the settlement
  contract is emptied after claims and fees);
- audit: ``check_audit`` (the audit passes, and fails naming ``file_hash`` on a tampered file).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from eth_utils import keccak
from web3 import Web3

from inferledger.audit import Auditor
from inferledger.demo import DemoConfig, DemoResult, run_demo
from ledger.chain.client import ChainClient, connect
from ledger.config import REPO_ROOT
from protocol import hashing, merkle, tensors
from protocol.contracts import CONTRACT_NAMES, Deployment, EpochRecord, artifact
from protocol.eip712 import Attestation, recover_attestation

REQUESTS = 24
ARTIFACTS = REPO_ROOT / "artifacts"
MODEL_DIR = REPO_ROOT / "models" / "digits-cnn"


def _reader(result: DemoResult) -> ChainClient:
    return ChainClient(connect(result.rpc_url), Deployment.from_dict(result.deployment), ARTIFACTS)


def _local_result_hash(
    session: ort.InferenceSession, job: dict[str, Any], image: np.ndarray[Any, Any]
) -> str:
    inputs = {"input": image[None]}
    outputs = {"logits": session.run(["logits"], inputs)[0]}
    model = bytes.fromhex(job["model_hash"][2:])
    return "0x" + hashing.result_hash(model, inputs, outputs).hex()


def check_consensus(result: DemoResult, reader: ChainClient) -> None:
    assert result.summary["accepted"] == result.summary["requests"] == REQUESTS
    samples = json.loads((MODEL_DIR / "samples.json").read_text())
    images = np.asarray(samples["images"], dtype=np.float32).reshape(-1, 1, 8, 8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(MODEL_DIR / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    domain = reader.deployment.registry_domain
    for i, job in enumerate(result.jobs):
        assert job["status"] == "accepted"
        votes = job["attestations"]
        assert len(votes) == 2 and len({v["contributor"] for v in votes}) == 2
        for vote in votes:
            assert vote["result_hash"] == job["result_hash"]
            att = Attestation(
                *(
                    bytes.fromhex(h[2:])
                    for h in (
                        job["job_id"],
                        job["model_hash"],
                        job["input_hash"],
                        vote["result_hash"],
                        vote["fingerprint"],
                    )
                )
            )
            assert (
                recover_attestation(domain, att, bytes.fromhex(vote["signature"][2:]))
                == vote["worker"]
            )
            assert (
                reader.call(reader.registry.functions.workerOwner(vote["worker"]))
                == vote["contributor"]
            )
        assert job["result_hash"] == _local_result_hash(session, job, images[i % len(images)])
        served = tensors.decode(job["outputs"]["logits"], max_bytes=1024)
        assert served.shape == (1, 10)


def check_payment(result: DemoResult, reader: ChainClient) -> None:
    price = int(json.loads((MODEL_DIR / "manifest.json").read_text())["price_per_row_wei"])
    redeemed = int(reader.call(reader.vault.functions.redeemedOf(result.client)))
    assert redeemed == REQUESTS * price == result.summary["client_paid_wei"]
    assert int(reader.call(reader.vault.functions.totalRedeemed())) == redeemed  # nobody else paid


def check_settlement(result: DemoResult, reader: ChainClient) -> None:
    last = int(reader.call(reader.settlement.functions.lastEpoch()))
    assert last >= 1
    for n in range(1, last + 1):
        raw = httpx.get(f"{result.api_url}/v1/epochs/{n}/file", timeout=10).content
        record = EpochRecord.from_call(reader.call(reader.settlement.functions.epochs(n)))
        payout, fees = record.cumulative_payout, record.cumulative_fees
        doc = json.loads(raw)
        assert record.file_hash == bytes(keccak(raw))
        assert "0x" + record.root.hex() == doc["root"]
        assert "0x" + record.results_root.hex() == doc["results_root"]
        assert not record.vetoed
        check_result_receipts(result, doc, record.results_root)
        assert payout == sum(int(leaf["cumulative_wei"]) for leaf in doc["leaves"])
        assert int(doc["totals"]["cumulative_fees_wei"]) == fees
    assert payout + fees == result.summary["client_paid_wei"]


def check_result_receipts(result: DemoResult, doc: dict[str, Any], results_root: bytes) -> None:
    """Each accepted job's receipt proves its consensus is under the posted results root."""
    for job in doc["jobs"][:5]:
        proof = httpx.get(
            f"{result.api_url}/v1/epochs/{doc['epoch']}/results/{job['job_id']}", timeout=10
        ).json()
        keys = ("job_id", "model_hash", "input_hash", "fingerprint", "result_hash")
        leaf = merkle.ResultLeaf(*(bytes.fromhex(job[k][2:]) for k in keys)).hash()
        assert merkle.verify_leaf(
            results_root, leaf, [bytes.fromhex(p[2:]) for p in proof["proof"]]
        )


def check_claims(result: DemoResult, reader: ChainClient) -> None:
    token, settlement = reader.token.functions, reader.settlement.functions
    total = 0
    for c in result.summary["contributors"]:
        assert c["earned_wei"] > 0
        assert c["received_wei"] == c["claimed_wei"] == c["earned_wei"]
        assert int(reader.call(settlement.claimedOf(c["contributor"]))) == c["earned_wei"]
        total += c["earned_wei"]
    assert total + result.summary["fees_wei"] == result.summary["client_paid_wei"]
    assert int(reader.call(token.balanceOf(reader.deployment.settlement))) == 0  # all paid out


def check_audit(result: DemoResult, reader: ChainClient) -> None:
    assert result.audit.ok, result.audit.faults
    assert result.audit.checks["attestation_signature"] == 2 * REQUESTS
    abis = {n: artifact(ARTIFACTS, n)["abi"] for n in CONTRACT_NAMES}

    def tampered(n: int) -> bytes:
        doc = json.loads(httpx.get(f"{result.api_url}/v1/epochs/{n}/file", timeout=10).content)
        leaf = doc["leaves"][0]
        leaf["cumulative_wei"] = str(int(leaf["cumulative_wei"]) + 1)  # an inflated payout
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    report = Auditor(reader.w3, reader.deployment, abis, tampered).audit()
    assert not report.ok
    assert {f["check"] for f in report.faults} == {"file_hash"}
    check_audit_cli(result, tampered)


def check_audit_cli(result: DemoResult, tampered: Any) -> None:
    """``inferledger audit`` as an auditor runs it: exit 0 on the served files, 1 on a
    tampered copy, with the fault named."""
    last = int(httpx.get(f"{result.api_url}/v1/epochs", timeout=10).json()[-1]["number"])
    base = [
        sys.executable,
        "-m",
        "inferledger.cli",
        "audit",
        "--epoch",
        str(last),
        "--rpc-url",
        result.rpc_url,
        "--deployment-file",
        str(result.data_dir / "deployment.json"),
    ]
    ok = subprocess.run(
        [*base, "--api-url", result.api_url, "--json"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    files = result.data_dir / "tampered"
    files.mkdir()
    for n in range(1, last + 1):
        (files / f"epoch-{n:06d}.json").write_bytes(tampered(n))
    bad = subprocess.run(
        [*base, "--files", str(files)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    assert "FAULT file_hash" in bad.stdout


@pytest.mark.e2e
def test_demo_loop_pays_settles_claims_and_audits(redis_url: str, tmp_path: Path) -> None:
    checked: list[str] = []

    def inspect(result: DemoResult) -> None:
        reader = _reader(result)
        for check in (check_consensus, check_payment, check_settlement, check_claims, check_audit):
            check(result, reader)
            checked.append(check.__name__)

    cfg = DemoConfig(
        requests=REQUESTS,
        data_dir=tmp_path / "demo",
        redis_url=redis_url,
        epoch_interval_s=3.0,
        inspect=inspect,
    )
    result = run_demo(cfg)
    assert checked == [
        "check_consensus",
        "check_payment",
        "check_settlement",
        "check_claims",
        "check_audit",
    ]
    assert Web3.is_checksum_address(result.client)
    assert result.summary["audit_ok"] and result.summary["consensus_rate"] == 1.0
    # every process was stopped: the API no longer answers
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{result.api_url}/healthz", timeout=2)
