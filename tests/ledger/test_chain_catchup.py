"""The bounded catch-up of the chain index on a request's path, on a real Hardhat node and
real databases (the clock is a fake): at most once per interval per key, inside the caller's
unit of work and undone with it, never failing its caller when the node is down."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from sqlmodel import Session

from inferledger.procs import free_port
from ledger.chain.catchup import CatchUp
from ledger.chain.client import ChainClient, connect
from ledger.chain.deploy import deploy
from ledger.chain.index import ChainIndex, deposited_of
from ledger.config import REPO_ROOT
from ledger.db import engine_for, session_scope

ARTIFACTS = REPO_ROOT / "artifacts"


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Vault:
    index: ChainIndex
    client: ChainClient

    def deposit(self, amount: int) -> None:
        self.client.transact(self.client.vault.functions.deposit(amount), "deposit")

    def seen(self, session: Session) -> int:
        return deposited_of(session, self.client.address)


@pytest.fixture
def vault(chain: Any, db_url: str) -> Vault:
    """Fresh contracts on the shared node; client 1 holds tokens approved to the vault."""
    treasury = Account.from_key(chain.keys[2]).address
    deployment, _ = deploy(
        chain.w3, ARTIFACTS, chain.keys[0], treasury=treasury, min_stake_wei=1, challenge_window_s=2
    )
    admin = ChainClient(chain.w3, deployment, ARTIFACTS, chain.keys[0])
    client = ChainClient(chain.w3, deployment, ARTIFACTS, chain.keys[1])
    admin.transact(admin.token.functions.mint(client.address, 10**6), "mint")
    client.transact(client.token.functions.approve(deployment.vault, 10**6), "approve")
    return Vault(ChainIndex(chain.w3, deployment, ARTIFACTS, engine_for(db_url)), client)


def test_catch_up_reads_the_chain_at_most_once_per_interval_per_key(vault: Vault) -> None:
    clock = Clock()
    catch_up = CatchUp(vault.index, min_interval_s=1.0, clock=clock)
    engine = vault.index.engine
    vault.deposit(1)
    with session_scope(engine) as session:
        assert catch_up(session, "client:a") is not None
        assert vault.seen(session) == 1
    vault.deposit(2)
    clock.now += 0.9
    with session_scope(engine) as session:
        assert catch_up(session, "client:a") is None  # too soon: the chain is not read
        assert vault.seen(session) == 1
        report = catch_up(session, "client:b")  # another key has its own interval
        assert report is not None and report.stored == 1
        assert vault.seen(session) == 3
    vault.deposit(4)
    clock.now += 0.1
    with session_scope(engine) as session:
        assert catch_up(session, "client:a") is not None  # the interval is over
        assert vault.seen(session) == 7
        assert catch_up(session, "client:a") is None


def test_catch_up_rolled_back_with_its_caller_is_done_again(vault: Vault) -> None:
    clock = Clock()
    catch_up = CatchUp(vault.index, min_interval_s=1.0, clock=clock)
    engine = vault.index.engine
    vault.deposit(5)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        assert catch_up(session, "client:a") is not None
        assert vault.seen(session) == 5
        raise RuntimeError("the caller's unit of work fails: its catch-up is undone")
    with Session(engine) as session:
        assert vault.seen(session) == 0 and vault.index.cursor(session)[1] is None
    with session_scope(engine) as session:  # within the interval, but nothing of it is left
        assert catch_up(session, "client:a") is not None
        assert vault.seen(session) == 5
    with session_scope(engine) as session:  # committed: now the interval holds
        assert catch_up(session, "client:a") is None
        assert vault.seen(session) == 5


def test_catch_up_serves_every_key_of_a_unit_of_work_once(vault: Vault) -> None:
    """What a unit of work serves arrived before it began: one catch-up in it is enough,
    for every client of a batch; but not once a savepoint undid it."""
    catch_up = CatchUp(vault.index, min_interval_s=1.0, clock=Clock())
    engine = vault.index.engine
    vault.deposit(8)
    with session_scope(engine) as session:
        assert catch_up(session, "client:a") is not None
        vault.deposit(9)  # after the unit began: it is for the next one
        assert catch_up(session, "client:b") is None
        assert vault.seen(session) == 8
    with session_scope(engine) as session:
        assert catch_up(session, "client:c") is not None and vault.seen(session) == 17
    vault.deposit(10)
    with session_scope(engine) as session:
        savepoint = session.begin_nested()
        assert catch_up(session, "client:d") is not None and vault.seen(session) == 27
        savepoint.rollback()  # e.g. one request of a batch refused
        assert vault.seen(session) == 17
        assert catch_up(session, "client:e") is not None and vault.seen(session) == 27


def test_catch_up_remembers_a_bounded_number_of_keys(vault: Vault) -> None:
    catch_up = CatchUp(vault.index, min_interval_s=1.0, keys_max=2, clock=Clock())

    def fresh(key: str) -> bool:  # each call its own unit of work
        with session_scope(vault.index.engine) as session:
            return catch_up(session, key) is not None

    assert fresh("a") and fresh("b") and fresh("c")
    assert not fresh("c") and not fresh("b")
    assert fresh("a")  # forgotten first: it syncs again
    assert fresh("c")  # "b" and "a" are the newest now


def test_catch_up_with_the_node_down_keeps_the_index_and_waits(
    vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    vault.deposit(6)
    vault.index.sync()
    cut_off = ChainIndex(
        connect(f"http://127.0.0.1:{free_port()}", 2.0),  # nothing listens there
        vault.index.deployment,
        ARTIFACTS,
        vault.index.engine,
    )
    clock = Clock()
    catch_up = CatchUp(cut_off, min_interval_s=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ledger.chain.catchup"):
        with session_scope(cut_off.engine) as session:
            assert catch_up(session, "eligibility") is None
            assert vault.seen(session) == 6  # the caller goes on with what the index has
        assert len(caplog.records) == 1 and "could not catch up" in caplog.records[0].message
        with session_scope(cut_off.engine) as session:
            assert catch_up(session, "eligibility") is None  # not tried again at once
        assert len(caplog.records) == 1
        clock.now += 1.0
        with session_scope(cut_off.engine) as session:
            assert catch_up(session, "eligibility") is None
        assert len(caplog.records) == 2
