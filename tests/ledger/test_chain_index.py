"""The chain index on its own Hardhat node (its history is rewritten here with evm_snapshot
and evm_revert): it stores exactly the events the chain has, once; a new instance resumes
from the cursor; events are confirmed only when deep enough; a reorganisation removes the
replaced events, stores the new ones and is counted in the report."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
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
from ledger.db import engine_for
from ledger.models import ChainCursor, ChainEvent
from protocol.contracts import Deployment, EpochRecord

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


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Processes(tmp_path_factory.mktemp("index-hardhat")) as procs:
        w3 = connect(start_hardhat_node(procs, free_port(), REPO_ROOT))
        keys = dev_keys(4)
        deployment, _ = deploy(
            w3,
            ARTIFACTS,
            keys[0],
            treasury=Account.from_key(keys[2]).address,
            min_stake_wei=1,
            challenge_window_s=3600,
        )
        admin, client, contributor = (
            ChainClient(w3, deployment, ARTIFACTS, keys[i]) for i in (0, 1, 3)
        )
        for who in (client, contributor):
            admin.transact(admin.token.functions.mint(who.address, 1_000 * TOKEN), "mint")
        client.transact(client.token.functions.approve(deployment.vault, 1_000 * TOKEN), "approve")
        yield Node(w3, deployment, admin, client, contributor)


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
