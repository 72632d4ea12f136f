"""Eligibility from the chain index equals ``StakeRegistry.isEligible`` on a real Hardhat
node after every step of a scripted life of two contributors and their workers: stakes,
unbonds (paid out and pending), slashes of bonded and of unbonding stake, jails and appeals,
removal, a refused re-registration. The stake each contributor has on chain (bonded and
unbonding) equals the projection's too, and ``refresh_eligibility`` sets ``Worker.eligible``
from the index alone."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chain_support import job, post_epoch, slash, wait_finalized
from eth_account import Account
from ledger_support import add_worker, fresh_ledger
from sqlmodel import Session

from ledger.chain import projection
from ledger.chain.client import ChainClient
from ledger.chain.projection import Stake
from ledger.config import REPO_ROOT
from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import ChainError
from ledger.models import Worker
from ledger.scheduler import refresh_eligibility
from protocol.eip712 import sign_registration

ARTIFACTS = REPO_ROOT / "artifacts"
TOKEN = 10**18  # also fresh_ledger's minimum stake
SLASH_BPS = 1_000


@dataclass
class World:
    ctx: Context
    admin: ChainClient
    a: ChainClient  # contributor A
    b: ChainClient  # contributor B
    keys: dict[str, str] = field(default_factory=dict)  # worker name -> device key

    def address(self, name: str) -> str:
        return str(Account.from_key(self.keys[name]).address)

    def stake(self, who: ChainClient, amount: int) -> None:
        who.transact(who.token.functions.approve(who.deployment.registry, amount), "approve")
        who.transact(who.registry.functions.stake(amount), "stake")

    def unbond(self, who: ChainClient, amount: int) -> None:
        who.transact(who.registry.functions.requestUnbond(amount), "requestUnbond")

    def register(self, who: ChainClient, name: str) -> None:
        worker, key = self.address(name), self.keys[name]
        deadline = int(time.time()) + 600
        sig = sign_registration(
            who.deployment.registry_domain, worker, who.address, deadline, bytes.fromhex(key[2:])
        )
        who.transact(who.registry.functions.registerWorker(worker, deadline, sig), "register")
        with session_scope(self.ctx.engine) as session:  # as its sign-in would
            if session.get(Worker, worker) is None:
                add_worker(session, worker, who.address)

    def call(self, who: ChainClient, what: str, *fn_args: Any) -> None:
        who.transact(getattr(who.registry.functions, what)(*fn_args), what)


@pytest.fixture
def world(chain: Any, db_url: str, tmp_path: Path) -> World:
    ctx = fresh_ledger(
        chain,
        db_url,
        tmp_path,
        deposit_wei=1,
        mint_to=tuple(chain.keys[3:5]),
        deploy_args={"unbonding_delay_s": 0, "slash_bps": SLASH_BPS},
    )
    actor = [ChainClient(chain.w3, ctx.deployment, ARTIFACTS, chain.keys[i]) for i in (0, 3, 4)]
    names = ("w1", "w2", "w3", "w4", "stranger")
    keys = {name: "0x" + bytes(Account.create().key).hex() for name in names}
    return World(ctx, *actor, keys=keys)


def check(world: World) -> dict[str, bool]:
    """Sync the index; assert the projection equals the chain for every worker (with and
    without its owner as a hint) and contributor; return each worker's eligibility."""
    ctx = world.ctx
    ctx.index.sync()
    registry = ctx.chain.registry.functions
    eligible: dict[str, bool] = {}
    with session_scope(ctx.engine) as session:
        for who in (world.a, world.b):
            bonded = int(ctx.chain.call(registry.stakeOf(who.address)))
            unbonding = int(ctx.chain.call(registry.unbondingOf(who.address))[0])
            assert projection.stake_of(session, who.address) == Stake(bonded, unbonding)
        for name in world.keys:
            worker = world.address(name)
            want = bool(ctx.chain.call(registry.isEligible(worker)))
            owner = str(ctx.chain.call(registry.workerOwner(worker)))
            assert projection.is_eligible(session, worker, ctx.min_stake_wei) is want, name
            assert projection.is_eligible(session, worker, ctx.min_stake_wei, owner) is want
            row = session.get(Worker, worker)
            if row is not None:
                row.eligible = not want  # refresh must set it, whatever it was
                refresh_eligibility(session, ctx, row)
                assert row.eligible is want, name
            eligible[name] = want
    return eligible


def eligible(*names: str) -> dict[str, bool]:
    return {name: name in names for name in ("w1", "w2", "w3", "w4", "stranger")}


def test_projection_equals_is_eligible_after_every_step(world: World) -> None:
    w, a, b, admin = world, world.a, world.b, world.admin
    assert w.ctx.min_stake_wei == TOKEN
    assert check(w) == eligible(), "nothing registered"
    w.stake(a, TOKEN // 2)
    with pytest.raises(ChainError, match="StakeBelowMinimum"):
        w.register(a, "w1")
    assert check(w) == eligible(), "A staked half the minimum: its registration is refused"
    w.stake(a, TOKEN // 2)
    w.register(a, "w1")
    assert check(w) == eligible("w1"), "A reached the minimum and registered w1"
    w.stake(b, 3 * TOKEN)
    w.register(b, "w2")
    w.register(b, "w3")
    assert check(w) == eligible("w1", "w2", "w3"), "B staked 3, registered w2 and w3"
    w.unbond(a, TOKEN // 10)
    assert check(w) == eligible("w2", "w3"), "A unbonded below the minimum"
    w.stake(a, TOKEN // 10)
    assert check(w) == eligible("w1", "w2", "w3"), "A is back at exactly the minimum"
    w.call(a, "withdrawUnbonded")
    assert check(w) == eligible("w1", "w2", "w3"), "A withdrew what it unbonded"
    w.stake(a, TOKEN)
    w.unbond(a, TOKEN // 2)
    assert check(w) == eligible("w1", "w2", "w3"), "A: 1.5 bonded, 0.5 unbonding"

    posted = post_epoch(admin, [job(n) for n in (1, 2)])
    wait_finalized(admin, posted.epoch)
    slash(admin, w.keys["w1"], posted, job(1))
    assert check(w) == eligible("w2", "w3"), "w1 slashed (0.2 of bonded stake) and jailed"
    w.call(admin, "unjail", w.address("w1"))
    assert check(w) == eligible("w1", "w2", "w3"), "w1 unjailed on appeal"
    slash(admin, w.keys["w2"], posted, job(1))
    assert check(w) == eligible("w1", "w3"), "w2 slashed and jailed; B's w3 stays"
    w.unbond(a, TOKEN + TOKEN // 4)
    assert check(w) == eligible("w3"), "A: 0.05 bonded, 1.75 unbonding"
    slash(admin, w.keys["w1"], posted, job(2))
    assert check(w) == eligible("w3"), "w1 slashed 0.18: all bonded stake, then unbonding"
    w.call(a, "withdrawUnbonded")
    w.stake(a, 2 * TOKEN)
    assert check(w) == eligible("w3"), "A staked 2, but w1 is still jailed"
    w.call(admin, "unjail", w.address("w1"))
    assert check(w) == eligible("w1", "w3"), "w1 unjailed"
    w.call(a, "removeWorker", w.address("w1"))
    assert check(w) == eligible("w3"), "A removed w1"
    with pytest.raises(ChainError, match="StakeWorkerAlreadyRegistered"):
        w.register(a, "w1")  # a key belongs to one contributor forever
    w.register(a, "w4")
    assert check(w) == eligible("w3", "w4"), "w1 cannot come back; A registered w4"
    w.call(b, "removeWorker", w.address("w3"))
    w.call(admin, "unjail", w.address("w2"))
    assert check(w) == eligible("w2", "w4"), "B removed w3; w2 unjailed"
    w.unbond(b, 27 * TOKEN // 10)
    assert check(w) == eligible("w4"), "B unbonded everything"
    w.stake(b, TOKEN)
    assert check(w) == eligible("w2", "w4"), "B staked the minimum again"

    with Session(w.ctx.engine) as session:
        assert projection.stake_of(session, a.address) == Stake(2 * TOKEN, 0)
        status = projection.worker_status(session, w.address("w1"))
        assert (status.owner, status.active, status.jailed) == (a.address.lower(), False, False)
