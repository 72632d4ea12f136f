"""Epoch close time at two sizes: the real ``ledger.epochs.close_epoch`` over N decided jobs,
split into its steps (tree: the jobs frozen and the epoch document with both Merkle trees
built from the database; file: its canonical bytes and durable write, its hash computed
beside the write; chain: the vouchers redeemed, beside the file step, and ``postEpoch``
after it, on a Hardhat node: so the steps add up to more than the close), against the
baseline measured in
the same run on the same jobs: the epoch's results tree built from leaves already in
memory (``protocol.merkle.build_results``), the least any close must do per job.

For each size a fresh database and fresh contracts: ``--clients`` clients deposit on chain
and sign one voucher each for what their jobs cost; N submitted jobs with two agreeing
votes each (bulk inserts, the price held in the journal) are decided by the real reconciler
in this process; then the epoch is closed. Prints a table and writes
bench/results/epoch.json. Usage: ``.venv/bin/python bench/epoch.py [--sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from sqlalchemy import insert
from sqlmodel import col, select
from web3.types import RPCEndpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import table, write_result  # noqa: E402
from bench.reconcile import CONTRIBUTORS, OUTPUTS  # noqa: E402
from inferledger import actors  # noqa: E402
from inferledger.demo import dev_keys  # noqa: E402
from inferledger.procs import Processes, free_port, start_hardhat_node  # noqa: E402
from ledger import epochs, journal  # noqa: E402
from ledger.chain.client import connect  # noqa: E402
from ledger.chain.deploy import deploy  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.context import Context  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.journal import TransferKind, TransferSpec  # noqa: E402
from ledger.models import Assignment, AssignmentStatus, Job, JobStatus  # noqa: E402
from ledger.reconcile import reconcile_batch  # noqa: E402
from protocol import epochfile, merkle  # noqa: E402
from protocol.eip712 import Voucher, sign_voucher  # noqa: E402

TOKEN = 10**18
PRICE = 10**15 + 7
ARTIFACTS = ROOT / "artifacts"


def _job(jid: str, client: str, cumulative: int, expiry: int, signature: str) -> dict[str, Any]:
    return {
        "id": jid,
        "client": client,
        "model_hash": "0x" + "ab" * 32,
        "input_hash": "0x" + "cd" * 32,
        "rows": 1,
        "price_wei": PRICE,
        "voucher_cumulative_wei": cumulative,
        "voucher_expiry": expiry,
        "voucher_signature": signature,
        "inputs_json": "{}",
        "replicas_wanted": 2,
        "status": JobStatus.SUBMITTED,
        "created_at": int(time.time()),
    }


def _votes(jid: str, n: int, now: int) -> list[dict[str, Any]]:
    votes = []
    for r in range(2):
        owner = CONTRIBUTORS[(n + r) % len(CONTRIBUTORS)]
        votes.append(
            {
                "job_id": jid,
                "worker": owner,
                "contributor": owner,
                "deadline": now + 600,
                "status": AssignmentStatus.SUBMITTED,
                "fingerprint": "0x" + "f1" * 32,
                "fingerprint_json": "{}",
                "result_hash": "0x" + "e1" * 32,
                "signature": "0x" + "11" * 65,
                "outputs_json": OUTPUTS,
                "submitted_at": now,
            }
        )
    return votes


def seed(ctx: Context, keys: list[str], count: int) -> None:
    """``count`` submitted jobs dealt to the clients; each client's last job carries its one
    real voucher (the one the epoch redeems), the others a placeholder signature."""
    now, expiry = int(time.time()), int(time.time()) + 86_400
    clients = [Account.from_key(k).address for k in keys]
    per_client = [
        count // len(keys) + (1 if c < count % len(keys) else 0) for c in range(len(keys))
    ]
    jobs, votes, holds, deposits = [], [], [], []
    n = 0
    for c, client in enumerate(clients):
        total = PRICE * per_client[c]
        voucher = Voucher(client, total, expiry)
        real = (
            "0x"
            + sign_voucher(ctx.deployment.vault_domain, voucher, bytes.fromhex(keys[c][2:])).hex()
        )
        deposits.append(
            TransferSpec(
                f"deposit:{client.lower()}:{uuid.uuid4().hex}",
                journal.VAULT,
                journal.client_account(client),
                total,
                TransferKind.DEPOSIT,
            )
        )
        for k in range(per_client[c]):
            jid = "0x" + os.urandom(32).hex()
            last = k == per_client[c] - 1
            jobs.append(
                _job(jid, client, PRICE * (k + 1), expiry, real if last else "0x" + "00" * 65)
            )
            votes.extend(_votes(jid, n, now))
            holds.append(
                TransferSpec(
                    f"hold:{jid}", journal.client_account(client), journal.ESCROW, PRICE,
                    TransferKind.HOLD, jid,
                )
            )  # fmt: skip
            n += 1
    with session_scope(ctx.engine) as session:
        journal.post_batch(session, [*deposits, *holds])
        for start in range(0, len(jobs), 5000):
            session.execute(insert(Job), jobs[start : start + 5000])
        for start in range(0, len(votes), 10000):
            session.execute(insert(Assignment), votes[start : start + 10000])


def decide_all(ctx: Context) -> float:
    """Every seeded job decided by the real reconciler; returns jobs per second."""
    started, decided = time.perf_counter(), 0
    while True:
        with session_scope(ctx.engine) as session:
            report = reconcile_batch(session, ctx, ctx.settings.reconcile_batch_size)
        step = report.accepted + report.failed + report.extended
        decided += step
        if step == 0:
            return decided / (time.perf_counter() - started)


class Timers:
    """Wall time of each named step of ``close_epoch``, by wrapping the module's functions
    (``close_epoch`` looks them up at call time), so the path timed is the real one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.saved: list[tuple[Any, str, Any]] = []

    def wrap(self, module: Any, name: str) -> None:
        inner: Callable[..., Any] = getattr(module, name)

        def timed(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        self.saved.append((module, name, inner))
        setattr(module, name, timed)

    def restore(self) -> None:
        for module, name, inner in reversed(self.saved):
            setattr(module, name, inner)


def close_timed(ctx: Context) -> dict[str, Any]:
    timers = Timers()
    for name in ("open_epoch", "build_document", "redeem_vouchers", "post_root", "_write_atomic"):
        timers.wrap(epochs, name)
    for name in ("canonical_bytes", "file_hash"):
        timers.wrap(epochfile, name)
    started = time.perf_counter()
    try:
        outcome = epochs.close_epoch(ctx)
    finally:
        timers.restore()
    total = time.perf_counter() - started
    if outcome is None:
        raise SystemExit("no epoch to close: the seeded jobs were not decided")
    s = timers.seconds
    return {
        "jobs": outcome.jobs,
        "total_s": round(total, 3),
        "tree_s": round(s["open_epoch"] + s["build_document"], 3),
        # the hash runs beside the write, and the redemptions beside both: the steps' sum
        # is more than the close
        "file_s": round(s["canonical_bytes"] + s["_write_atomic"], 3),
        "chain_s": round(s["redeem_vouchers"] + s["post_root"], 3),
        "gas_used": outcome.gas_used,
        "steps_s": {k: round(v, 3) for k, v in s.items()},
    }


def baseline_s(ctx: Context) -> float:
    """The results tree of the epoch just closed, from leaves already in memory."""
    with session_scope(ctx.engine) as session:
        jobs = session.exec(select(Job).where(col(Job.epoch).is_not(None))).all()
        leaves = epochs.result_leaves(jobs)
    started = time.perf_counter()
    merkle.build_results(leaves)
    return time.perf_counter() - started


def measure(
    w3: Any, rpc_url: str, keys: list[str], clients: int, size: int, tmp: Path
) -> dict[str, Any]:
    admin_key, treasury = keys[0], Account.from_key(keys[2]).address
    deployment, _ = deploy(
        w3, ARTIFACTS, admin_key, treasury=treasury, min_stake_wei=TOKEN, challenge_window_s=2
    )
    data = tmp / f"size-{size}"
    data.mkdir(parents=True)
    (data / "deployment.json").write_text(deployment.to_json())
    settings = Settings(
        mode="dev",
        data_dir=data,
        database_url=f"sqlite:///{data / 'ledger.db'}",
        rpc_url=rpc_url,
        settler_key=admin_key,
        deployment_file=data / "deployment.json",
    )
    ctx = Context(settings)
    client_keys = ["0x" + os.urandom(32).hex() for _ in range(clients)]
    admin = actors.actor(w3, deployment, ARTIFACTS, admin_key)
    per_client = PRICE * (size // clients + 1)
    for key in client_keys:  # gas money: Hardhat's node funds only its own accounts
        address = Account.from_key(key).address
        w3.provider.make_request(RPCEndpoint("hardhat_setBalance"), [address, hex(TOKEN)])
        admin.transact(
            admin.token.functions.mint(Account.from_key(key).address, per_client), "mint"
        )
        actors.deposit_with_permit(actors.actor(w3, deployment, ARTIFACTS, key), per_client)
    started = time.perf_counter()
    seed(ctx, client_keys, size)
    seeded_s = time.perf_counter() - started
    reconcile_per_s = decide_all(ctx)
    figures = close_timed(ctx)
    figures["baseline_tree_s"] = round(baseline_s(ctx), 4)
    figures["ratio"] = round(figures["total_s"] / max(figures["baseline_tree_s"], 1e-9), 1)
    figures["per_job_us"] = round(figures["total_s"] / size * 1e6, 1)
    figures["seed_s"] = round(seeded_s, 2)
    figures["reconcile_in_process_per_s"] = round(reconcile_per_s)
    ctx.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="jobs per epoch, in turn")
    parser.add_argument("--clients", type=int, default=100, help="paying clients (vouchers)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    keys = dev_keys(3)
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="il-epoch-") as tmp,
        Processes(Path(tmp) / "logs") as procs,
    ):
        rpc_url = start_hardhat_node(procs, free_port(), ROOT)
        w3 = connect(rpc_url)
        for size in sizes:
            print(f"epoch of {size:,} jobs: seeding, deciding, closing", flush=True)
            runs.append(measure(w3, rpc_url, keys, args.clients, size, Path(tmp)))
    heads = ["jobs", "close s", "tree s", "file s", "chain s", "µs/job", "baseline s", "x base"]
    rows = [
        [r["jobs"], r["total_s"], r["tree_s"], r["file_s"], r["chain_s"], r["per_job_us"],
         r["baseline_tree_s"], r["ratio"], r["gas_used"]]
        for r in runs
    ]  # fmt: skip
    print("\n" + table([*heads, "gas"], rows))
    write_result(
        "epoch",
        {"runs": runs},
        {"results_tree_in_memory_s": [r["baseline_tree_s"] for r in runs]},
        vars(args),
    )


if __name__ == "__main__":
    main()
