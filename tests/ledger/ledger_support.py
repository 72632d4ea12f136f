"""Helpers shared by the ledger's tests: snapshots of the journal and direct inserts of jobs.

Nothing here stands in for a real part; the helpers only read or write the real database.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from ledger import journal
from ledger.chain.client import ChainClient
from ledger.chain.deploy import deploy
from ledger.config import REPO_ROOT, Settings
from ledger.context import Context
from ledger.journal import TransferKind, TransferSpec
from ledger.models import Account as AccountRow
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus, Transfer, Worker


@dataclass(frozen=True)
class Snapshot:
    balances: dict[str, int]  # every stored account, zero balances included
    transfers: int

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.balances.items() if v != 0}


def snapshot(engine: Engine) -> Snapshot:
    """What the journal holds, read in a fresh session (nothing cached from the caller)."""
    with Session(engine) as session:
        balances = {a.id: a.balance_wei for a in session.exec(select(AccountRow)).all()}
        count = session.exec(select(func.count()).select_from(Transfer)).one()
    return Snapshot(balances, int(count))


def transfer_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(Transfer.id)).all())


def address(n: int) -> str:
    """A distinct, well-formed lower-case address for a test actor."""
    return "0x" + f"{n:040x}"


def h32(tag: str | int) -> str:
    """A 32-byte hex value standing for a hash or fingerprint."""
    raw = str(tag).encode().hex()
    return "0x" + raw[-64:].rjust(64, "0")


def fund_and_hold(session: Session, client: str, job_id: str, price: int) -> None:
    """Deposit ``price`` for the client (vault -> client) and hold it (client -> escrow)."""
    journal.post(
        session,
        TransferSpec(
            f"deposit:{job_id}",
            journal.VAULT,
            journal.client_account(client),
            price,
            TransferKind.DEPOSIT,
        ),
    )
    journal.post(
        session,
        TransferSpec(
            f"hold:{job_id}",
            journal.client_account(client),
            journal.ESCROW,
            price,
            TransferKind.HOLD,
            job_id,
        ),
    )


def insert_job(
    session: Session,
    *,
    client: str,
    price: int,
    votes: list[tuple[str, str, str, str]],
    status: str = JobStatus.SUBMITTED,
    hold: bool = True,
    model_hash: str | None = None,
    outputs: dict[str, str] | None = None,
) -> Job:
    """A job with one submitted assignment per vote (contributor, worker, fingerprint,
    result hash), its price deposited and held unless ``hold`` is False; ``outputs`` gives a
    worker's revealed outputs (wire JSON) where they matter."""
    jid = "0x" + os.urandom(32).hex()
    if hold:
        fund_and_hold(session, client, jid, price)
    job = Job(
        id=jid,
        client=client,
        model_hash=model_hash or h32("model"),
        input_hash=h32("input"),
        rows=1,
        price_wei=price,
        voucher_cumulative_wei=price,
        voucher_expiry=int(time.time()) + 7200,
        voucher_signature="0x" + "00" * 65,
        inputs_json="{}",
        replicas_wanted=len(votes),
        status=status,
    )
    session.add(job)
    for contributor, worker, fingerprint, result_hash in votes:
        session.add(
            Assignment(
                job_id=jid,
                worker=worker,
                contributor=contributor,
                deadline=int(time.time()) + 120,
                status=AssignmentStatus.SUBMITTED,
                fingerprint=fingerprint,
                fingerprint_json=json.dumps({"tag": fingerprint}),
                result_hash=result_hash,
                signature="0x" + "11" * 65,
                outputs_json=(outputs or {}).get(worker, json.dumps({"by": worker})),
                submitted_at=int(time.time()),
            )
        )
    session.flush()
    return job


def add_worker(
    session: Session,
    worker: str,
    contributor: str,
    *,
    eligible: bool = True,
    seen_ago_s: float = 0.0,
) -> Worker:
    row = Worker(
        address=worker,
        contributor=contributor,
        eligible=eligible,
        checked_at=time.time(),
        last_seen=time.time() - seen_ago_s,
    )
    session.add(row)
    return row


ARTIFACTS = REPO_ROOT / "artifacts"


def fresh_ledger(
    chain: Any,
    sqlite_url: str,
    tmp_path: Path,
    *,
    deposit_wei: int,
    mint_to: tuple[str, ...] = (),
    deploy_args: dict[str, Any] | None = None,
    **settings: Any,
) -> Context:
    """Fresh contracts on the shared Hardhat node (epoch numbers start at 1), client 1 with
    ``deposit_wei`` in the vault, tokens minted to ``mint_to`` keys, and a ledger context
    on SQLite whose settler is key 0."""
    treasury = Account.from_key(chain.keys[2]).address
    deployment, _ = deploy(
        chain.w3,
        ARTIFACTS,
        chain.keys[0],
        treasury=treasury,
        min_stake_wei=10**18,
        challenge_window_s=2,
        **(deploy_args or {}),
    )
    path = tmp_path / "deployment.json"
    path.write_text(deployment.to_json())
    admin = ChainClient(chain.w3, deployment, ARTIFACTS, chain.keys[0])
    client = ChainClient(chain.w3, deployment, ARTIFACTS, chain.keys[1])
    admin.transact(admin.token.functions.mint(client.address, deposit_wei), "mint")
    for key in mint_to:
        admin.transact(
            admin.token.functions.mint(Account.from_key(key).address, 1000 * 10**18), "mint"
        )
    client.transact(client.token.functions.approve(deployment.vault, deposit_wei), "approve")
    client.transact(client.vault.functions.deposit(deposit_wei), "deposit")
    return Context(
        Settings(
            database_url=sqlite_url,
            data_dir=tmp_path,
            rpc_url=chain.rpc_url,
            deployment_file=path,
            settler_key=chain.keys[0],
            **settings,
        )
    )
