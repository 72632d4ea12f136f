"""Closing epochs against a real Hardhat node: the file, the redeemed vouchers and the posted
root agree with the journal; closing again posts nothing; a crash at any step is finished
exactly once under the same epoch number. Each test deploys its own contracts, so on-chain
epoch numbers start at 1 with the test's fresh database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account
from ledger_support import add_worker, address, fresh_ledger, h32, snapshot
from sqlmodel import Session, select
from web3 import Web3

from ledger import epochs, journal
from ledger.chain.client import ChainClient
from ledger.config import REPO_ROOT
from ledger.context import Context
from ledger.db import session_scope
from ledger.epochs import close_epoch, epoch_path
from ledger.jobs import JobRequest, create_job
from ledger.models import Assignment, AssignmentStatus, Epoch, EpochStatus, Job, JobStatus
from ledger.reconcile import reconcile_batch
from protocol import epochfile, merkle, tensors
from protocol.contracts import EpochRecord
from protocol.eip712 import Voucher, sign_voucher

TOKEN = 10**18
ARTIFACTS = REPO_ROOT / "artifacts"
MANIFEST = json.loads((REPO_ROOT / "models" / "digits-cnn" / "manifest.json").read_text())
MODEL_HASH = "0x" + MANIFEST["sha256"]
PRICE = int(MANIFEST["price_per_row_wei"])
DEPOSIT = 1 * TOKEN


@pytest.fixture
def ctx(chain: Any, sqlite_url: str, tmp_path: Path) -> Iterator[Context]:
    """Fresh contracts, client 1 with a deposit there, three eligible contributors."""
    context = fresh_ledger(
        chain,
        sqlite_url,
        tmp_path,
        deposit_wei=DEPOSIT,
        replicas=2,
        max_replicas=2,  # a split vote fails at once
    )
    with session_scope(context.engine) as session:
        for i in (3, 4, 5):
            add_worker(session, address(0xD0 + i), Account.from_key(chain.keys[i]).address)
    yield context


def _job(ctx: Context, chain: Any, n: int, *, agree: bool = True, client_key: int = 1) -> str:
    """A client's n-th job (cumulative voucher n * PRICE; client 1 unless ``client_key``
    names another of the chain's keys), answered and reconciled."""
    key = chain.keys[client_key]
    client = Account.from_key(key).address
    expiry = int(time.time()) + 7200
    sig = sign_voucher(
        ctx.deployment.vault_domain, Voucher(client, n * PRICE, expiry), bytes.fromhex(key[2:])
    )
    inputs = {"input": tensors.encode(np.full((1, 1, 8, 8), n, dtype=np.float32))}
    req = JobRequest(MODEL_HASH, inputs, client, n * PRICE, expiry, "0x" + sig.hex())
    with session_scope(ctx.engine) as session:
        job, created = create_job(session, ctx, req)
        assert created
        for i, a in enumerate(
            session.exec(select(Assignment).where(Assignment.job_id == job.id)).all()
        ):
            a.status = AssignmentStatus.SUBMITTED
            a.result_hash = h32(f"result-{n}-{0 if agree else i}")
            a.fingerprint = h32("fingerprint")
            a.fingerprint_json = json.dumps({"runtime": "test"})
            a.signature = "0x" + "22" * 65
            a.outputs_json = "{}"
            session.add(a)
        stored = session.get(Job, job.id)  # every replica answered: ready to reconcile
        assert stored is not None
        stored.status = JobStatus.SUBMITTED
    with session_scope(ctx.engine) as session:
        report = reconcile_batch(session, ctx, 100)
    assert (report.accepted, report.failed) == ((1, 0) if agree else (0, 1))
    return job.id


def _on_chain(ctx: Context, n: int) -> dict[str, Any]:
    c = ctx.chain
    record = EpochRecord.from_call(c.call(c.settlement.functions.epochs(n)))
    return {
        "root": "0x" + record.root.hex(),
        "results_root": "0x" + record.results_root.hex(),
        "file_hash": "0x" + record.file_hash.hex(),
        "payout": record.cumulative_payout,
        "fees": record.cumulative_fees,
    }


def _last_epoch(ctx: Context) -> int:
    return int(ctx.chain.call(ctx.chain.settlement.functions.lastEpoch()))


def _redeemed(ctx: Context) -> int:
    return int(ctx.chain.call(ctx.chain.vault.functions.totalRedeemed()))


def _file(ctx: Context, n: int) -> tuple[bytes, dict[str, Any]]:
    raw = epoch_path(ctx, n).read_bytes()
    return raw, epochfile.parse(raw)


def _check_file_against_journal(ctx: Context, doc: dict[str, Any]) -> None:
    payout = int(doc["totals"]["cumulative_payout_wei"])
    fees = int(doc["totals"]["cumulative_fees_wei"])
    leaves = {leaf["account"]: int(leaf["cumulative_wei"]) for leaf in doc["leaves"]}
    assert sum(leaves.values()) == payout
    snap = snapshot(ctx.engine)
    earned = {
        Web3.to_checksum_address(k.split(":", 1)[1]): v
        for k, v in snap.nonzero().items()
        if k.startswith("contributor:")
    }
    assert leaves == earned  # the leaves are the contributors' cumulative earnings
    assert fees == snap.balance(journal.TREASURY)
    tree = merkle.build(list(leaves.items()))
    assert "0x" + tree.root.hex() == doc["root"]
    for account, amount in leaves.items():
        assert merkle.verify(tree.root, account, amount, tree.proof(account))
        assert not merkle.verify(tree.root, account, amount + 1, tree.proof(account))


def test_epochs_close_posts_root_file_hash_and_redeems_what_was_charged(
    ctx: Context, chain: Any
) -> None:
    accepted = [_job(ctx, chain, n) for n in (1, 2, 3)]
    failed = _job(ctx, chain, 4, agree=False)
    assert _last_epoch(ctx) == 0 and _redeemed(ctx) == 0

    outcome = close_epoch(ctx)
    assert outcome is not None
    assert (outcome.number, outcome.jobs) == (1, 4)
    raw, doc = _file(ctx, 1)
    assert outcome.file_hash == "0x" + epochfile.file_hash(raw).hex()
    assert raw == epochfile.canonical_bytes(doc)
    posted = _on_chain(ctx, 1)
    assert posted["root"] == doc["root"] == outcome.root
    assert posted["file_hash"] == outcome.file_hash
    payout, fees = outcome.cumulative_payout_wei, outcome.cumulative_fees_wei
    assert (posted["payout"], posted["fees"]) == (payout, fees)
    assert _last_epoch(ctx) == 1
    # the vault redeemed exactly what was paid out plus fees: three prices, not the failed one
    assert _redeemed(ctx) == payout + fees == 3 * PRICE
    client = Account.from_key(chain.keys[1]).address
    assert ctx.chain.call(ctx.chain.vault.functions.redeemedOf(client)) == 3 * PRICE
    assert ctx.chain.call(ctx.chain.vault.functions.depositOf(client)) == DEPOSIT - 3 * PRICE
    assert (
        ctx.chain.call(ctx.chain.token.functions.balanceOf(ctx.deployment.settlement)) == 3 * PRICE
    )
    _check_file_against_journal(ctx, doc)
    assert {j["job_id"]: j["status"] for j in doc["jobs"]} == {
        **dict.fromkeys(accepted, "accepted"),
        failed: "failed",
    }
    assert doc["totals"]["jobs_accepted"] == 3 and doc["totals"]["jobs_failed"] == 1
    assert [v["redeem_cumulative_wei"] for v in doc["vouchers"]] == [str(3 * PRICE)]
    with Session(ctx.engine) as session:
        row = session.get(Epoch, 1)
        assert row is not None and row.status == EpochStatus.POSTED
        assert (row.root, row.file_hash, row.jobs) == (doc["root"], outcome.file_hash, 4)
        assert {j.epoch for j in session.exec(select(Job)).all()} == {1}

    # nothing new: nothing closed, posted or redeemed
    gas = ctx.chain.gas_used
    assert close_epoch(ctx) is None
    assert _last_epoch(ctx) == 1 and _redeemed(ctx) == 3 * PRICE
    assert ctx.chain.gas_used == gas
    assert not epoch_path(ctx, 2).exists()

    # a new job: epoch 2 carries cumulative totals and chains to epoch 1
    _job(ctx, chain, 5)
    second = close_epoch(ctx)
    assert second is not None and (second.number, second.jobs) == (2, 1)
    _, doc2 = _file(ctx, 2)
    assert doc2["previous"] == {"epoch": 1, "root": doc["root"]}
    assert second.cumulative_payout_wei + second.cumulative_fees_wei == 4 * PRICE == _redeemed(ctx)
    leaves1 = {leaf["account"]: int(leaf["cumulative_wei"]) for leaf in doc["leaves"]}
    leaves2 = {leaf["account"]: int(leaf["cumulative_wei"]) for leaf in doc2["leaves"]}
    assert all(leaves2.get(a, 0) >= v for a, v in leaves1.items())
    assert _on_chain(ctx, 2)["root"] == doc2["root"] != doc["root"]
    assert _on_chain(ctx, 1)["root"] == doc["root"]  # epoch 1 is untouched
    _check_file_against_journal(ctx, doc2)


def test_epochs_failed_jobs_only_open_no_epoch(ctx: Context, chain: Any) -> None:
    _job(ctx, chain, 1, agree=False)
    assert close_epoch(ctx) is None
    assert _last_epoch(ctx) == 0 and _redeemed(ctx) == 0
    with Session(ctx.engine) as session:
        assert session.exec(select(Epoch)).all() == []


def test_epochs_crash_after_file_before_post_finishes_the_same_epoch_once(
    ctx: Context, chain: Any
) -> None:
    first = [_job(ctx, chain, 1), _job(ctx, chain, 2)]
    with session_scope(ctx.engine) as session:  # close_epoch's first half, then a crash
        epoch = epochs.open_epoch(session)
        assert epoch is not None and epoch.number == 1
        doc = epochs.build_document(session, ctx, epoch)
    raw = epochfile.canonical_bytes(doc)
    epoch_path(ctx, 1).parent.mkdir(parents=True, exist_ok=True)
    epoch_path(ctx, 1).write_bytes(raw)
    assert _last_epoch(ctx) == 0 and _redeemed(ctx) == 0

    late = _job(ctx, chain, 3)  # decided after the crash: belongs to the next epoch
    outcome = close_epoch(ctx)
    assert outcome is not None and (outcome.number, outcome.jobs) == (1, 2)
    assert epoch_path(ctx, 1).read_bytes() == raw  # the same document, rebuilt byte for byte
    assert (
        _on_chain(ctx, 1)["file_hash"] == outcome.file_hash == "0x" + epochfile.file_hash(raw).hex()
    )
    assert _on_chain(ctx, 1)["root"] == doc["root"]
    assert _last_epoch(ctx) == 1
    assert _redeemed(ctx) == 2 * PRICE  # redeemed once, for the epoch's two jobs only
    with Session(ctx.engine) as session:
        assert {j.id for j in session.exec(select(Job).where(Job.epoch == 1)).all()} == set(first)
        late_job = session.get(Job, late)
        assert late_job is not None and late_job.epoch is None

    nxt = close_epoch(ctx)
    assert nxt is not None and (nxt.number, nxt.jobs) == (2, 1)
    assert _last_epoch(ctx) == 2 and _redeemed(ctx) == 3 * PRICE
    assert close_epoch(ctx) is None


@pytest.mark.parametrize("stage", ["redeemed", "posted"])
def test_epochs_crash_after_a_chain_step_finishes_without_repeating_it(
    ctx: Context, chain: Any, stage: str
) -> None:
    _job(ctx, chain, 1)
    with session_scope(ctx.engine) as session:
        epoch = epochs.open_epoch(session)
        assert epoch is not None
        doc = epochs.build_document(session, ctx, epoch)
    raw = epochfile.canonical_bytes(doc)
    c = ctx.chain
    if stage == "redeemed":  # the vouchers were redeemed, then a crash before postEpoch
        (v,) = doc["vouchers"]
        voucher = (v["client"], int(v["cumulative_amount_wei"]), int(v["expiry"]))
        item = (voucher, bytes.fromhex(v["signature"][2:]), int(v["redeem_cumulative_wei"]))
        c.transact(c.vault.functions.redeem([item]), "redeem")
        assert _last_epoch(ctx) == 0
    else:  # redeemed and posted, then a crash before the database was told
        epochs.settle_on_chain(ctx, doc, epochfile.file_hash(raw))
        assert _last_epoch(ctx) == 1
    assert _redeemed(ctx) == PRICE
    with Session(ctx.engine) as session:
        row = session.get(Epoch, 1)
        assert row is not None and row.status == EpochStatus.BUILDING

    gas = c.gas_used
    outcome = close_epoch(ctx)
    assert outcome is not None and outcome.number == 1
    if stage == "posted":
        assert outcome.gas_used == 0 and c.gas_used == gas  # nothing sent again
    else:
        assert outcome.gas_used > 0  # postEpoch only: the redeem is not repeated
    assert _last_epoch(ctx) == 1 and _redeemed(ctx) == PRICE
    assert _on_chain(ctx, 1)["root"] == doc["root"]
    assert _on_chain(ctx, 1)["file_hash"] == "0x" + epochfile.file_hash(raw).hex()
    assert epoch_path(ctx, 1).read_bytes() == raw
    with Session(ctx.engine) as session:
        row = session.get(Epoch, 1)
        assert row is not None and row.status == EpochStatus.POSTED and row.root == doc["root"]
    assert close_epoch(ctx) is None
    assert _last_epoch(ctx) == 1


def test_epochs_redeem_only_the_clients_the_epoch_charged(
    ctx: Context, chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client charged by no job of the epoch keeps the target an earlier epoch redeemed:
    its voucher is not sent again. A fresh epoch asks the chain nothing before redeeming."""
    other = ChainClient(chain.w3, ctx.deployment, ARTIFACTS, chain.keys[6])
    ctx.chain.transact(ctx.chain.token.functions.mint(other.address, DEPOSIT), "mint")
    other.transact(other.token.functions.approve(ctx.deployment.vault, DEPOSIT), "approve")
    other.transact(other.vault.functions.deposit(DEPOSIT), "deposit")
    sent: list[list[str]] = []
    asked: list[int] = []
    transact, call_many = ctx.chain.transact, ctx.chain.call_many

    def noting_transact(fn: Any, what: str, gas: int | None = None) -> dict[str, Any]:
        if what == "redeem":
            sent.append([item[0][0].lower() for item in fn.args[0]])
        return transact(fn, what, gas)

    def noting_call_many(fns: list[Any], what: str = "call") -> list[Any]:
        asked.append(len(fns))
        return call_many(fns, what)

    monkeypatch.setattr(ctx.chain, "transact", noting_transact)
    monkeypatch.setattr(ctx.chain, "call_many", noting_call_many)
    client = Account.from_key(chain.keys[1]).address.lower()
    _job(ctx, chain, 1)
    _job(ctx, chain, 1, client_key=6)
    assert close_epoch(ctx) is not None
    assert sorted(sent.pop()) == sorted([client, other.address.lower()])
    assert _redeemed(ctx) == 2 * PRICE
    _job(ctx, chain, 2)  # client 1 only
    assert close_epoch(ctx) is not None
    assert sent == [[client]] and asked == []  # the other client's voucher is not sent again
    assert _redeemed(ctx) == 3 * PRICE
    _, doc = _file(ctx, 2)
    assert len(doc["vouchers"]) == 2  # the file still lists both clients' vouchers
