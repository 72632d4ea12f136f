"""The audit catches an operator who cheats. One real epoch is built once (a real Hardhat
node, three staked contributors with registered device keys, signed votes with real result
hashes, the real reconciler and epoch builder); then, from a chain snapshot taken before
anything of the epoch went on chain, each case posts what a cheating operator would: its
tampered file's hash, roots and totals, with the redemptions its file claims. The audit must
pass the honest epoch and fail each cheat naming the fault.

The epoch: client 1's jobs 1 (all agree), 2 (two agree, one dissents), 3 (no majority:
failed, so the client's last voucher exceeds its charge by one price), 4 (two classes that
agree within the model's tolerance, so the file reveals their outputs)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account
from sqlmodel import select
from web3 import Web3
from web3.types import RPCEndpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ledger"))
from ledger_support import add_worker, fresh_ledger  # noqa: E402

from inferledger import actors  # noqa: E402
from inferledger.audit import Auditor, AuditReport  # noqa: E402
from ledger.chain.client import ChainClient  # noqa: E402
from ledger.config import REPO_ROOT  # noqa: E402
from ledger.context import Context  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.epochs import build_document, open_epoch, settle_on_chain  # noqa: E402
from ledger.jobs import JobRequest, create_job  # noqa: E402
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus  # noqa: E402
from ledger.reconcile import reconcile_batch  # noqa: E402
from protocol import epochfile, hashing, merkle, tensors  # noqa: E402
from protocol.contracts import CONTRACT_NAMES, Deployment, artifact  # noqa: E402
from protocol.eip712 import Attestation, Voucher, sign_attestation, sign_voucher  # noqa: E402
from protocol.fingerprint import Fingerprint  # noqa: E402
from protocol.pricing import split  # noqa: E402

TOKEN = 10**18
ARTIFACTS = REPO_ROOT / "artifacts"
MANIFEST = json.loads((REPO_ROOT / "models" / "digits-cnn" / "manifest.json").read_text())
MODEL = bytes.fromhex(MANIFEST["sha256"])
PRICE = int(MANIFEST["price_per_row_wei"])
CLASS_F = Fingerprint("1.0", "CPUExecutionProvider", "avx2-fma", "all", 1)
CLASS_G = Fingerprint("1.0", "CPUExecutionProvider", "sse4.2", "all", 1)
JOBS = [  # per job, each worker's (logit value, class), workers in address order
    [(1.0, CLASS_F), (1.0, CLASS_F), (1.0, CLASS_F)],
    [(2.0, CLASS_F), (2.0, CLASS_F), (9.0, CLASS_F)],
    [(3.0, CLASS_F), (4.0, CLASS_F), (5.0, CLASS_F)],
    [(6.0, CLASS_F), (6.0, CLASS_F), (6.000001, CLASS_G)],
]
Doc = dict[str, Any]


@dataclass
class World:
    ctx: Context
    doc: Doc  # the honest epoch file, built and not yet on chain
    snapshot: str
    keys: dict[str, str]  # contributor address (lower case) -> its key


LATE_DEVICE = "0x" + "5e" * 32  # a device key its contributor registers only after the epoch


def _rpc(ctx: Context, method: str, params: list[Any]) -> Any:
    return ctx.chain.w3.provider.make_request(RPCEndpoint(method), params)["result"]


def _answer_job(ctx: Context, chain: Any, n: int, devices: dict[str, str]) -> None:
    """Client 1's n-th job, answered by the three workers with signed votes whose result
    hashes commit to their revealed outputs."""
    key = chain.keys[1]
    client = Account.from_key(key).address
    expiry = int(time.time()) + 7200
    sig = sign_voucher(
        ctx.deployment.vault_domain, Voucher(client, n * PRICE, expiry), bytes.fromhex(key[2:])
    )
    array = np.full((1, 1, 8, 8), n / 16, dtype=np.float32)
    inputs = {"input": tensors.encode(array)}
    req = JobRequest("0x" + MODEL.hex(), inputs, client, n * PRICE, expiry, "0x" + sig.hex())
    with session_scope(ctx.engine) as session:
        job, _ = create_job(session, ctx, req)
        rows = session.exec(
            select(Assignment).where(Assignment.job_id == job.id).order_by(Assignment.worker)
        ).all()
        for a, (value, fp) in zip(rows, JOBS[n - 1], strict=True):
            outputs = {"logits": np.full((1, 10), value, dtype=np.float32)}
            result = hashing.result_hash(MODEL, {"input": array}, outputs)
            att = Attestation(
                bytes.fromhex(job.id[2:]),
                MODEL,
                bytes.fromhex(job.input_hash[2:]),
                result,
                fp.digest(),
            )
            signature = sign_attestation(
                ctx.deployment.registry_domain, att, bytes.fromhex(devices[a.worker][2:])
            )
            a.status, a.result_hash = AssignmentStatus.SUBMITTED, "0x" + result.hex()
            a.signature, a.fingerprint = "0x" + signature.hex(), "0x" + fp.digest().hex()
            a.fingerprint_json = fp.canonical().decode()
            a.outputs_json = json.dumps({"logits": tensors.encode(outputs["logits"])})
            session.add(a)
        stored = session.get(Job, job.id)
        assert stored is not None
        stored.status = JobStatus.SUBMITTED


@pytest.fixture(scope="module")
def world(chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("audit")
    ctx = fresh_ledger(
        chain,
        f"sqlite:///{tmp / 'ledger.db'}",
        tmp,
        deposit_wei=TOKEN,
        mint_to=tuple(chain.keys[3:6]),
        replicas=3,
        max_replicas=3,
    )
    devices: dict[str, str] = {}
    with session_scope(ctx.engine) as session:
        for key in chain.keys[3:6]:
            device = "0x" + bytes(Account.create().key).hex()
            contributor = ChainClient(chain.w3, ctx.deployment, ARTIFACTS, key)
            worker = actors.stake_and_register(contributor, 100 * TOKEN, device)
            add_worker(session, worker, contributor.address)
            devices[worker] = device
    for n in range(1, len(JOBS) + 1):
        _answer_job(ctx, chain, n, devices)
    with session_scope(ctx.engine) as session:
        report = reconcile_batch(session, ctx, 10)
        assert (report.accepted, report.failed) == (3, 1)
        epoch = open_epoch(session)
        assert epoch is not None
        doc = build_document(session, ctx, epoch)
    keys = {Account.from_key(k).address.lower(): k for k in chain.keys[3:6]}
    yield World(ctx, doc, _rpc(ctx, "evm_snapshot", []), keys)


# --- what a cheating operator changes -------------------------------------------------------


def _job(doc: Doc, n: int) -> Doc:
    """Job n of client 1 (by its voucher)."""
    return next(j for j in doc["jobs"] if int(j["voucher_cumulative_wei"]) == n * PRICE)


def _reseal(doc: Doc, *, fee_bonus: int = 0, leaf_bonus: int = 0) -> Doc:
    """Make the file consistent with its (tampered) jobs, as a careful cheat would: leaves,
    root, results root and totals; ``fee_bonus`` and ``leaf_bonus`` add to the fees posted
    and to the first leaf beyond what the jobs say."""
    earned: dict[str, int] = defaultdict(int)
    for job in doc["jobs"]:
        for account, amount in job["paid"].items():
            earned[Web3.to_checksum_address(account)] += int(amount)
    leaves = sorted(earned.items())
    leaves[0] = (leaves[0][0], leaves[0][1] + leaf_bonus)
    doc["leaves"] = [{"account": a, "cumulative_wei": str(v)} for a, v in leaves]
    doc["root"] = "0x" + merkle.build(leaves).root.hex()
    results = {leaf.key: leaf for leaf in epochfile.result_leaves(doc)}  # a tree has no twins
    doc["results_root"] = "0x" + merkle.build_results(list(results.values())).root.hex()
    fees = sum(int(j["fee_wei"]) for j in doc["jobs"]) + fee_bonus
    doc["totals"]["cumulative_payout_wei"] = str(sum(v for _, v in leaves))
    doc["totals"]["cumulative_fees_wei"] = str(fees)
    return doc


def _charge(doc: Doc, extra_wei: int) -> None:
    voucher = doc["vouchers"][0]
    voucher["redeem_cumulative_wei"] = str(int(voucher["redeem_cumulative_wei"]) + extra_wei)


def _pay(doc: Doc, job: Doc, contributors: list[str]) -> None:
    shares, fee = split(int(job["price_wei"]), int(doc["fee_bps"]), sorted(contributors))
    job["paid"] = {c: str(v) for c, v in shares.items()}
    job["fee_wei"] = str(fee)


def forged_vote(doc: Doc) -> Doc:
    """A vote's result is altered after its worker signed it."""
    _job(doc, 1)["votes"][0]["result_hash"] = "0x" + "ab" * 32
    return doc


def paid_dissenter(doc: Doc) -> Doc:
    """The worker that disagreed with consensus is paid a share too."""
    job = _job(doc, 2)
    _pay(doc, job, [v["contributor"] for v in job["votes"]])
    return _reseal(doc)


def inflated_payout(doc: Doc) -> Doc:
    """A leaf above what its jobs earned, taken out of the fees so the totals still fit."""
    return _reseal(doc, fee_bonus=-1000, leaf_bonus=1000)


def dropped_job(doc: Doc) -> Doc:
    """An accepted job left out; its charge stays (the operator keeps it as fees)."""
    job = _job(doc, 1)
    doc["jobs"].remove(job)
    return _reseal(doc, fee_bonus=int(job["price_wei"]))


def charged_above_voucher(doc: Doc) -> Doc:
    """A job charged twice its price: more than its voucher adds to the client's previous
    one (the failed job's unspent voucher makes room for it on chain)."""
    job = _job(doc, 1)
    job["price_wei"] = str(2 * PRICE)
    _pay(doc, job, list(job["paid"]))
    _charge(doc, PRICE)
    return _reseal(doc)


def wrong_consensus(doc: Doc) -> Doc:
    """The dissenting vote recorded as the consensus, its contributor paid the whole share."""
    job = _job(doc, 2)
    dissent = next(v for v in job["votes"] if v["result_hash"] != job["result_hash"])
    job["result_hash"], job["fingerprint"] = dissent["result_hash"], dissent["fingerprint"]
    _pay(doc, job, [dissent["contributor"]])
    return _reseal(doc)


def counted_twice(doc: Doc) -> Doc:
    """One job listed (and paid, and charged) twice."""
    doc["jobs"].append(copy.deepcopy(_job(doc, 1)))
    _charge(doc, PRICE)
    return _reseal(doc)


def late_worker(doc: Doc) -> Doc:
    """A vote from a key that was not registered when the epoch ran (its contributor
    registers it after the epoch is posted): the vote is signed, by the wrong key."""
    job, device = _job(doc, 1), Account.from_key(LATE_DEVICE)
    vote = job["votes"][0]
    att = Attestation(
        *(bytes.fromhex(job[k][2:]) for k in ("job_id", "model_hash", "input_hash")),
        bytes.fromhex(vote["result_hash"][2:]),
        bytes.fromhex(vote["fingerprint"][2:]),
    )
    domain = Deployment.from_dict(doc["contracts"] | {"chain_id": doc["chain_id"]})
    signature = sign_attestation(domain.registry_domain, att, bytes(device.key))
    vote["worker"], vote["signature"] = device.address, "0x" + signature.hex()
    return doc


def _register_late_device(world: World, doc: Doc) -> None:
    contributor = _job(doc, 1)["votes"][0]["contributor"].lower()
    key = world.keys[contributor]
    actors.register_device(
        ChainClient(world.ctx.chain.w3, world.ctx.deployment, ARTIFACTS, key), LATE_DEVICE
    )


def honest(doc: Doc) -> Doc:
    return doc


CASES: list[tuple[Callable[[Doc], Doc], set[str]]] = [  # each cheat and the faults named
    (honest, set()),
    (forged_vote, {"attestation_signature", "payout_split"}),
    (paid_dissenter, {"payout_split"}),
    (inflated_payout, {"leaves", "totals"}),
    (dropped_job, {"charged_on_chain", "charged_matches_jobs", "money_conserved", "totals"}),
    (charged_above_voucher, {"job_within_voucher"}),
    (wrong_consensus, {"consensus", "payout_split"}),
    (counted_twice, {"job_once", "job_within_voucher"}),
    (late_worker, {"worker_registered", "payout_split"}),
]
AFTER_POSTING = {late_worker: _register_late_device}  # what the cheat does on chain later
CASES_BY_NAME = {tamper.__name__: faults for tamper, faults in CASES}


def _post_and_audit(world: World, tamper: Callable[[Doc], Doc]) -> tuple[AuditReport, bytes]:
    """From the snapshot before the epoch: post the (tampered) file as its operator would,
    then audit from the chain and that file alone."""
    _rpc(world.ctx, "evm_revert", [world.snapshot])
    world.snapshot = _rpc(world.ctx, "evm_snapshot", [])  # a reverted snapshot is spent
    doc = tamper(copy.deepcopy(world.doc))
    raw = epochfile.canonical_bytes(doc)
    ctx = Context(world.ctx.settings)  # a fresh settler client: its nonce from the chain
    settle_on_chain(ctx, doc, epochfile.file_hash(raw))
    if tamper in AFTER_POSTING:
        AFTER_POSTING[tamper](world, doc)
    abis = {n: artifact(ARTIFACTS, n)["abi"] for n in CONTRACT_NAMES}
    tolerances = {sha: m.tolerance_abs for sha, m in ctx.models.items()}
    auditor = Auditor(ctx.chain.w3, ctx.deployment, abis, lambda n: raw, tolerances)
    return auditor.audit(), raw


@pytest.mark.chain
@pytest.mark.parametrize(("tamper", "faults"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_audit_names_each_cheat(
    world: World, tamper: Callable[[Doc], Doc], faults: set[str]
) -> None:
    """The honest epoch passes every check; each cheat fails exactly the checks it breaks
    (never file_hash: the cheat posted its own file's hash)."""
    report, _ = _post_and_audit(world, tamper)
    assert {f["check"] for f in report.faults} == faults, report.faults
    assert report.ok is (not faults)
    assert report.epochs == [1]
    assert report.checks["attestation_signature"] == 3 * len(world.doc["jobs"]) + (
        3 if tamper is counted_twice else -3 if tamper is dropped_job else 0
    )
    if not faults:
        assert report.checks["outputs_bound"] == 3  # the cross-class job's revealed outputs
        assert report.checks["consensus"] == 4
        assert report.checks["worker_registered"] == 12


@pytest.mark.chain
def test_audit_cli_exit_codes_and_json(world: World, tmp_path: Path) -> None:
    """``inferledger audit`` as an auditor runs it, on epoch files in a directory: exit 0 and
    ``ok`` on the honest epoch, 1 naming the fault on a cheat, 2 on a usage error."""
    deployment = tmp_path / "deployment.json"
    deployment.write_text(world.ctx.deployment.to_json())
    base = [sys.executable, "-m", "inferledger.cli", "audit", "--rpc-url"]
    base += [world.ctx.settings.rpc_url, "--deployment-file", str(deployment)]
    runs = {}
    for tamper, extra in ((wrong_consensus, ["--json"]), (honest, ["--epoch", "1"])):
        _, raw = _post_and_audit(world, tamper)
        files = tmp_path / tamper.__name__
        files.mkdir()
        (files / "epoch-000001.json").write_bytes(raw)
        runs[tamper.__name__] = subprocess.run(
            [*base, "--files", str(files), *extra], capture_output=True, text=True, timeout=120
        )
    cheat, ok = runs["wrong_consensus"], runs["honest"]
    assert cheat.returncode == 1, cheat.stdout + cheat.stderr
    report = json.loads(cheat.stdout)
    assert report["ok"] is False and report["epochs"] == [1]
    assert {f["check"] for f in report["faults"]} == CASES_BY_NAME["wrong_consensus"]
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit passed" in ok.stdout and "FAULT" not in ok.stdout
    both = subprocess.run(
        [*base, "--files", str(tmp_path), "--api-url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert both.returncode == 2
