"""The chain index on its own Hardhat node (its history is rewritten here with evm_snapshot
and evm_revert): it stores exactly the events the chain has, once; a new instance resumes
from the cursor; events are confirmed only when deep enough; a reorganisation removes the
replaced events, stores the new ones and is counted in the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chain_support import job, post_epoch, slash
from eth_account import Account
from sqlalchemy import Engine
from sqlmodel import Session, select
from web3 import Web3
from web3.types import RPCEndpoint

from inferledger.actors import stake_and_register
from inferledger.demo import dev_keys
from inferledger.procs import Processes, free_port, start_hardhat_node
from ledger.chain.client import ChainClient, connect
from ledger.chain.deploy import deploy
from ledger.chain.index import (
    SKIPPED_EVENTS,
    ChainIndex,
    ReorgTooDeep,
    args,
    deposited_of,
    events,
)
from ledger.config import REPO_ROOT
from ledger.db import engine_for, session_scope
from ledger.models import ChainCursor, ChainEvent
from protocol.contracts import Deployment, EpochRecord
from protocol.eip712 import Voucher, sign_voucher

ARTIFACTS = REPO_ROOT / "artifacts"
TOKEN = 10**18


@dataclass
class Node:
    w3: Web3
    deployment: Deployment
    admin: ChainClient  # settler and guardian
    client: ChainClient
    contributor: ChainClient

    def rpc(self, method: str, *params: Any) -> Any:
        response = self.w3.provider.make_request(RPCEndpoint(method), list(params))
        return response["result"]

    def revert(self, snapshot: Any) -> None:
        assert self.rpc("evm_revert", snapshot) is True
        for who in (self.admin, self.client, self.contributor):
            who._next_nonce = None  # the reverted transactions' nonces are free again

    def index(self, engine: Engine, **kwargs: Any) -> ChainIndex:
        return ChainIndex(self.w3, self.deployment, ARTIFACTS, engine, **kwargs)

    def deposit(self, amount: int) -> None:
        self.client.transact(self.client.vault.functions.deposit(amount), "deposit")


def _deploy(w3: Web3, keys: list[str], **deploy_args: Any) -> Node:
    """Contracts of their own on keys (admin, client, treasury, contributor); the client
    and the contributor hold 1000 tokens, the client's approved to the vault."""
    admin_key, client_key, treasury_key, contributor_key = keys
    deployment, _ = deploy(
        w3, ARTIFACTS, admin_key, treasury=Account.from_key(treasury_key).address, **deploy_args
    )
    admin, client, contributor = (
        ChainClient(w3, deployment, ARTIFACTS, k) for k in (admin_key, client_key, contributor_key)
    )
    for who in (client, contributor):
        admin.transact(admin.token.functions.mint(who.address, 1_000 * TOKEN), "mint")
    client.transact(client.token.functions.approve(deployment.vault, 1_000 * TOKEN), "approve")
    return Node(w3, deployment, admin, client, contributor)


@pytest.fixture(scope="module")
def hardhat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web3]:
    with Processes(tmp_path_factory.mktemp("index-hardhat")) as procs:
        yield connect(start_hardhat_node(procs, free_port(), REPO_ROOT))


@pytest.fixture(scope="module")
def node(hardhat: Web3) -> Node:
    return _deploy(hardhat, dev_keys(4), min_stake_wei=1, challenge_window_s=3600)


@pytest.fixture
def quick(hardhat: Web3) -> Node:
    """Fresh contracts with no notice, unbonding delay or challenge window, so every flow
    ends at once, on keys of their own: the reorganisation tests' reverts never touch them."""
    return _deploy(
        hardhat,
        dev_keys(10)[5:9],
        min_stake_wei=TOKEN,
        challenge_window_s=0,
        withdrawal_delay_s=0,
        unbonding_delay_s=0,
    )


def activity(node: Node) -> None:
    """One of most kinds of event: deposits, a withdrawal asked and cancelled, a stake, a
    worker registered and removed, an unbond, an epoch posted and vetoed."""
    node.deposit(3 * TOKEN)
    node.deposit(2 * TOKEN + 7)
    vault = node.client.vault.functions
    node.client.transact(vault.requestWithdrawal(TOKEN), "requestWithdrawal")
    node.client.transact(vault.cancelWithdrawal(), "cancelWithdrawal")
    worker_key = "0x" + bytes(Account.create().key).hex()
    worker = stake_and_register(node.contributor, 10 * TOKEN, worker_key)
    registry = node.contributor.registry.functions
    node.contributor.transact(registry.requestUnbond(TOKEN), "requestUnbond")
    node.contributor.transact(registry.removeWorker(worker), "removeWorker")
    settlement = node.admin.settlement
    last = int(settlement.functions.lastEpoch().call())
    vetoed = EpochRecord.from_call(settlement.functions.epochs(last).call()).vetoed
    epoch = last if vetoed else last + 1  # a vetoed epoch is posted again
    root = epoch.to_bytes(32, "big")
    node.admin.transact(
        settlement.functions.postEpoch(epoch, root, root, b"\x00" * 32, 0, 0), "postEpoch"
    )
    node.admin.transact(settlement.functions.veto(epoch), "veto")


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        return value.lower()
    return value


def on_chain(node: Node) -> dict[str, tuple[str, str, int, dict[str, Any]]]:
    """Every indexed event on the chain, read with web3's own filters, by index id."""
    head = node.w3.eth.block_number
    out: dict[str, tuple[str, str, int, dict[str, Any]]] = {}
    for name, contract in (
        ("PaymentVault", node.admin.vault),
        ("StakeRegistry", node.admin.registry),
        ("EpochSettlement", node.admin.settlement),
    ):
        for entry in contract.abi:
            if entry["type"] != "event" or entry["name"] in SKIPPED_EVENTS:
                continue
            event = contract.events[entry["name"]]
            for log in event.get_logs(from_block=node.deployment.block, to_block=head):
                key = f"0x{bytes(log['blockHash']).hex()}:{log['logIndex']}"
                decoded = {k: _plain(v) for k, v in log["args"].items()}
                out[key] = (name, log["event"], log["blockNumber"], decoded)
    return out


def stored(engine: Engine) -> dict[str, tuple[str, str, int, dict[str, Any]]]:
    with Session(engine) as session:
        return {
            e.id: (e.contract, e.event, e.block_number, args(e))
            for e in session.exec(select(ChainEvent)).all()
        }


def cursor(engine: Engine) -> ChainCursor:
    with Session(engine) as session:
        row = session.get(ChainCursor, "contracts")
        assert row is not None
        return row


def test_sync_stores_exactly_the_chain_events_once(node: Node, db_url: str) -> None:
    engine = engine_for(db_url)
    activity(node)
    index = node.index(engine, confirmations=0, batch_blocks=3)  # many small batches
    report = index.sync()
    chain = on_chain(node)
    kinds = {(c, e) for c, e, _, _ in chain.values()}
    assert {
        ("PaymentVault", "Deposited"),
        ("PaymentVault", "WithdrawalRequested"),
        ("PaymentVault", "WithdrawalCancelled"),
        ("PaymentVault", "SettlementSet"),
        ("StakeRegistry", "Staked"),
        ("StakeRegistry", "WorkerRegistered"),
        ("StakeRegistry", "UnbondRequested"),
        ("StakeRegistry", "WorkerRemoved"),
        ("EpochSettlement", "EpochPosted"),
        ("EpochSettlement", "EpochVetoed"),
    } <= kinds
    assert stored(engine) == chain
    assert report.stored == len(chain) and report.batches > 1
    assert report.to_block == node.w3.eth.block_number == cursor(engine).last_block_scanned
    assert (
        cursor(engine).last_block_hash
        == "0x" + bytes(node.w3.eth.get_block("latest")["hash"]).hex()
    )

    again = index.sync()
    assert again.stored == 0 and again.batches == 0 and stored(engine) == chain

    client = node.client.address
    expected = sum(
        int(a["amount"])
        for c, e, _, a in chain.values()
        if e == "Deposited" and a["client"] == client.lower()
    )
    with Session(engine) as session:
        assert deposited_of(session, client) == expected >= 5 * TOKEN + 7
        assert deposited_of(session, client, confirmed_only=True) == expected  # 0 confirmations
        posted = events(session, "EpochSettlement", "EpochPosted")
        assert posted and all(e.confirmed for e in posted)
        assert args(posted[-1])["cumulativePayout"] == "0"


VAULT, REGISTRY, SETTLEMENT = "PaymentVault", "StakeRegistry", "EpochSettlement"
Expected = list[tuple[str, str, dict[str, Any]]]  # (contract, event, arguments) in order


def _at(node: Node, receipt: Any) -> int:
    return int(node.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def _vault_flows(q: Node) -> Expected:
    """Deposits (own and for another), a withdrawal paid, one cancelled, a redemption."""
    vault, client, admin = q.client.vault.functions, q.client.address, q.admin.address
    q.deposit(10 * TOKEN)
    q.admin.transact(q.admin.token.functions.mint(admin, TOKEN), "mint")
    q.admin.transact(q.admin.token.functions.approve(q.deployment.vault, TOKEN), "approve")
    q.admin.transact(q.admin.vault.functions.depositFor(client, TOKEN), "depositFor")
    paid = q.client.transact(vault.requestWithdrawal(TOKEN), "requestWithdrawal")
    q.client.transact(vault.withdraw(), "withdraw")
    cancelled = q.client.transact(vault.requestWithdrawal(2 * TOKEN), "requestWithdrawal")
    q.client.transact(vault.cancelWithdrawal(), "cancelWithdrawal")
    voucher = Voucher(client, 5 * TOKEN, int(time.time()) + 3600)
    assert q.client.account is not None
    sig = sign_voucher(q.deployment.vault_domain, voucher, bytes(q.client.account.key))
    item = ((client, voucher.cumulative_amount, voucher.expiry), sig, 5 * TOKEN)
    q.admin.transact(q.admin.vault.functions.redeem([item]), "redeem")
    return [
        (VAULT, "Deposited", {"client": client, "from": client, "amount": 10 * TOKEN,
                              "balance": 10 * TOKEN}),
        (VAULT, "Deposited", {"client": client, "from": admin, "amount": TOKEN,
                              "balance": 11 * TOKEN}),
        (VAULT, "WithdrawalRequested", {"client": client, "amount": TOKEN,
                                        "unlockAt": _at(q, paid)}),
        (VAULT, "Withdrawn", {"client": client, "amount": TOKEN, "balance": 10 * TOKEN}),
        (VAULT, "WithdrawalRequested", {"client": client, "amount": 2 * TOKEN,
                                        "unlockAt": _at(q, cancelled)}),
        (VAULT, "WithdrawalCancelled", {"client": client}),
        (VAULT, "VoucherRedeemed", {"client": client, "cumulativeAmount": 5 * TOKEN,
                                    "increase": 5 * TOKEN}),
    ]  # fmt: skip


def _stake_flows(q: Node) -> tuple[Expected, str, str]:
    """A stake and a worker, an unbond paid out, one left pending; the worker and its key."""
    registry, me = q.contributor.registry.functions, q.contributor.address
    worker_key = "0x" + bytes(Account.create().key).hex()
    worker = stake_and_register(q.contributor, 20 * TOKEN, worker_key)
    first = q.contributor.transact(registry.requestUnbond(2 * TOKEN), "requestUnbond")
    q.contributor.transact(registry.withdrawUnbonded(), "withdrawUnbonded")
    second = q.contributor.transact(registry.requestUnbond(TOKEN), "requestUnbond")
    return (
        [
            (REGISTRY, "Staked", {"contributor": me, "amount": 20 * TOKEN, "total": 20 * TOKEN}),
            (REGISTRY, "WorkerRegistered", {"contributor": me, "worker": worker}),
            (REGISTRY, "UnbondRequested", {"contributor": me, "amount": 2 * TOKEN,
                                           "unbonding": 2 * TOKEN, "unlockAt": _at(q, first)}),
            (REGISTRY, "Unbonded", {"contributor": me, "amount": 2 * TOKEN}),
            (REGISTRY, "UnbondRequested", {"contributor": me, "amount": TOKEN,
                                           "unbonding": TOKEN, "unlockAt": _at(q, second)}),
        ],
        worker,
        worker_key,
    )  # fmt: skip


def _settle_and_slash(q: Node, worker: str, worker_key: str, treasury: str) -> Expected:
    """An epoch with a claim and fees, a slash (bonded and unbonding stake) that jails the
    worker, its unjail and its removal."""
    me = q.contributor.address
    posted = post_epoch(q.admin, [job(1)], earnings=[(me, 3 * TOKEN)], fees_wei=TOKEN)
    assert posted.earnings is not None
    record = EpochRecord.from_call(q.admin.call(q.admin.settlement.functions.epochs(1)))
    proof = posted.earnings.proof(me)
    q.contributor.transact(
        q.contributor.settlement.functions.claim(1, me, 3 * TOKEN, proof), "claim"
    )
    q.client.transact(q.client.settlement.functions.claimFees(1), "claimFees")
    slash(q.client, worker_key, posted, job(1))  # anyone may slash with the evidence
    q.admin.transact(q.admin.registry.functions.unjail(worker), "unjail")
    q.contributor.transact(q.contributor.registry.functions.removeWorker(worker), "removeWorker")
    cut = (17 + 1) * TOKEN // 10  # 10 % of bonded plus unbonding stake
    return [
        (SETTLEMENT, "EpochPosted", {"epoch": 1, "root": posted.earnings.root,
                                     "resultsRoot": posted.results.root, "fileHash": bytes(32),
                                     "cumulativePayout": 3 * TOKEN, "cumulativeFees": TOKEN,
                                     "claimableAt": record.claimable_at}),
        (SETTLEMENT, "Claimed", {"epoch": 1, "account": me, "cumulativeAmount": 3 * TOKEN,
                                 "amount": 3 * TOKEN}),
        (SETTLEMENT, "FeesClaimed", {"epoch": 1, "treasury": treasury, "amount": TOKEN}),
        (REGISTRY, "Slashed", {"contributor": me, "worker": worker, "jobId": job(1),
                               "epoch": 1, "amount": cut}),
        (REGISTRY, "WorkerJailed", {"worker": worker}),
        (REGISTRY, "WorkerUnjailed", {"worker": worker}),
        (REGISTRY, "WorkerRemoved", {"contributor": me, "worker": worker}),
    ]  # fmt: skip


def _declared(node: Node) -> dict[tuple[str, str], str | None]:
    """Every indexed (contract, event) of the ABIs, with its first indexed argument."""
    out: dict[tuple[str, str], str | None] = {}
    for name, contract in (
        ("PaymentVault", node.admin.vault),
        ("StakeRegistry", node.admin.registry),
        ("EpochSettlement", node.admin.settlement),
    ):
        for entry in contract.abi:
            if entry["type"] == "event" and entry["name"] not in SKIPPED_EVENTS:
                indexed = [i["name"] for i in entry["inputs"] if i.get("indexed")]
                out[(name, entry["name"])] = indexed[0] if indexed else None
    return out


def test_sync_decodes_every_event_the_contracts_emit(quick: Node, db_url: str) -> None:
    engine = engine_for(db_url)
    d, treasury = quick.deployment, Account.from_key(dev_keys(10)[7]).address
    expected: Expected = [  # at deployment
        (VAULT, "SettlementSet", {"settlement": d.settlement}),
        (SETTLEMENT, "VaultSet", {"vault": d.vault}),
        (REGISTRY, "SettlementSet", {"settlement": d.settlement}),
    ]
    expected += _vault_flows(quick)
    stakes, worker, worker_key = _stake_flows(quick)
    expected += stakes + _settle_and_slash(quick, worker, worker_key, treasury)

    report = quick.index(engine, confirmations=0, batch_blocks=4).sync()
    chain = on_chain(quick)
    assert stored(engine) == chain and report.stored == len(chain)  # equal to get_logs
    declared = _declared(quick)
    # never emitted here: EIP712DomainChanged (the domains are immutable) and EpochVetoed
    # (it needs a challenge window: test_sync_stores_exactly_the_chain_events_once has it)
    never = {(VAULT, "EIP712DomainChanged"), (REGISTRY, "EIP712DomainChanged")}
    assert {(c, e) for c, e, _ in expected} == set(declared) - never - {(SETTLEMENT, "EpochVetoed")}
    with Session(engine) as session:
        found = events(session)
        for e in found:
            subject = declared[(e.contract, e.event)]
            assert e.subject == (args(e)[subject] if subject else None)
            assert e.confirmed and len(e.tx_hash) == len(e.block_hash) == 66
        got = [(e.contract, e.event, args(e)) for e in found]  # in chain order
    assert got == [(c, e, {k: _plain(v) for k, v in a.items()}) for c, e, a in expected]


def test_a_new_index_resumes_from_the_cursor(node: Node, sqlite_url: str) -> None:
    engine = engine_for(sqlite_url)
    node.index(engine).sync()
    before = stored(engine)
    last = cursor(engine).last_block_scanned
    node.deposit(11)
    node.deposit(13)
    fresh = node.index(engine)  # as after a restart
    report = fresh.sync()
    assert report.from_block == last + 1 and report.stored == 2
    after = stored(engine)
    assert after == on_chain(node)
    new = {k: v for k, v in after.items() if k not in before}
    assert sorted(v[3]["amount"] for v in new.values()) == ["11", "13"]
    assert all(v[2] > last for v in new.values())


def test_an_event_is_confirmed_only_when_deep_enough(node: Node, sqlite_url: str) -> None:
    engine = engine_for(sqlite_url)
    index = node.index(engine, confirmations=3)
    for _ in range(3):
        node.rpc("evm_mine")
    index.sync()  # every earlier event confirmed
    node.deposit(17)
    block = node.w3.eth.block_number

    def confirmed() -> bool:
        with Session(engine) as session:
            (event,) = [e for e in events(session, event="Deposited") if e.block_number == block]
            return event.confirmed

    index.sync()
    assert not confirmed()
    node.rpc("evm_mine")
    node.rpc("evm_mine")
    assert index.sync().confirmed == 0 and not confirmed()  # 2 blocks on top
    node.rpc("evm_mine")
    assert index.sync().confirmed == 1 and confirmed()  # 3 blocks on top
    with Session(engine) as session:
        later = [e for e in events(session) if e.block_number > block - 3]
        assert all(e.confirmed == (e.block_number <= block) for e in later)


@pytest.mark.parametrize("confirmations", [0, 4])
def test_a_reorganisation_replaces_the_events_it_removed(
    node: Node, db_url: str, confirmations: int, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_for(db_url)
    index = node.index(engine, confirmations=confirmations)
    index.sync()
    fork = node.w3.eth.block_number
    snapshot = node.rpc("evm_snapshot")
    node.deposit(101)  # E1
    index.sync()
    e1 = [k for k, v in stored(engine).items() if v[1] == "Deposited" and v[3]["amount"] == "101"]
    assert len(e1) == 1
    node.revert(snapshot)
    node.deposit(202)  # E2, in a block at E1's height with another hash
    node.rpc("evm_mine")
    with caplog.at_level(logging.WARNING, logger="ledger.chain.index"):
        report = index.sync()
    assert report.reorg and report.removed == 1
    assert report.removed_confirmed == (1 if confirmations == 0 else 0)
    assert any("CONFIRMED" in r.message for r in caplog.records) == (confirmations == 0)
    now = stored(engine)
    assert e1[0] not in now
    assert now == on_chain(node)
    assert [v[3]["amount"] for v in now.values() if v[2] > fork] == ["202"]
    assert report.rewound_to == fork
    row = cursor(engine)
    assert (
        row.last_block_hash
        == "0x" + bytes(node.w3.eth.get_block(row.last_block_scanned)["hash"]).hex()
    )
    assert row.last_block_scanned == node.w3.eth.block_number
    assert index.sync().stored == 0 and not index.sync().reorg


def test_a_reorganisation_is_undone_inside_the_callers_unit_of_work(
    node: Node, db_url: str
) -> None:
    """``sync(session)``, as a request's catch-up runs it: the rewind and the rescan are
    the caller's to commit or roll back, also with the replaced events loaded in it."""
    engine = engine_for(db_url)
    index = node.index(engine, confirmations=0)
    index.sync()
    fork = node.w3.eth.block_number
    snapshot = node.rpc("evm_snapshot")
    node.deposit(401)
    index.sync()
    node.revert(snapshot)
    node.deposit(402)

    def after_fork(session: Session) -> list[str]:
        return [args(e)["amount"] for e in events(session) if e.block_number > fork]

    with pytest.raises(RuntimeError), session_scope(engine) as session:
        assert index.sync(session).reorg and after_fork(session) == ["402"]
        raise RuntimeError("the caller fails: nothing of the sync stays")
    with Session(engine) as session:
        assert after_fork(session) == ["401"]
    with session_scope(engine) as session:
        assert after_fork(session) == ["401"]  # loaded here before the rewind deletes it
        report = index.sync(session)
        assert report.reorg and report.removed == report.removed_confirmed == 1
        assert after_fork(session) == ["402"]
    assert stored(engine) == on_chain(node)
    assert cursor(engine).last_block_scanned == node.w3.eth.block_number


def test_a_reorganisation_deeper_than_the_limit_stops_the_index(
    node: Node, sqlite_url: str
) -> None:
    engine = engine_for(sqlite_url)
    shallow = node.index(engine, reorg_depth_max=1)
    shallow.sync()
    fork = node.w3.eth.block_number
    snapshot = node.rpc("evm_snapshot")
    for amount in (301, 302, 303):
        node.deposit(amount)
        shallow.sync()
    node.revert(snapshot)
    node.deposit(304)  # the chain is now shorter than the cursor
    with pytest.raises(ReorgTooDeep):
        shallow.sync()
    assert cursor(engine).last_block_scanned == fork + 3  # nothing changed
    report = node.index(engine, reorg_depth_max=64).sync()  # a deeper limit undoes it
    assert report.reorg and report.rewound_to is not None and report.rewound_to <= fork
    assert report.removed == 3 and report.removed_confirmed == 1  # 301 was 2 blocks deep
    assert stored(engine) == on_chain(node)
