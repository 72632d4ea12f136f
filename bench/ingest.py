"""Paid job ingest through the HTTP API (voucher signature checked, price held, replicas
assigned, job committed before the answer), against the naive baseline measured in the same
run: the same server admitting one request per unit of work (``INFERLEDGER_INGEST_BATCH_MAX=1``,
one commit per request).

Seeds clients with deposits in the journal and eligible workers, starts the API with
``python -m api.serve`` (``--workers`` processes with a listening socket each, default 2 for
this 2-core machine), and drives it from this process with
``--clients`` (128) keep-alive connections, each sending its client's requests one after another
with increasing cumulative vouchers, signed beforehand (signing is the client's cost, not
the server's). Every answer must be 202; then the journal's invariants are checked in full.
Prints a table and writes bench/results/ingest-<database>.json.

Usage: ``make bench`` or ``.venv/bin/python bench/ingest.py [--requests 6000]
[--clients 64] [--workers 2] [--postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from sqlmodel import Session, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import read_status  # noqa: E402
from bench.reconcile import fresh_postgres  # noqa: E402
from inferledger.procs import Processes, free_port, http_ok, wait_until  # noqa: E402
from ledger import invariants, journal  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.context import Context  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.journal import TransferKind, TransferSpec  # noqa: E402
from ledger.models import Client, Job, Worker  # noqa: E402
from protocol import tensors  # noqa: E402
from protocol.contracts import Deployment  # noqa: E402
from protocol.eip712 import Voucher, sign_voucher  # noqa: E402
from protocol.manifest import load_models  # noqa: E402

CONTRIBUTORS = 8


def seed(ctx: Context, keys: list[bytes], per_client: int, price: int) -> None:
    """Each client with ``per_client`` prices deposited; eligible workers that stay fresh."""
    with session_scope(ctx.engine) as session:
        deposits = []
        for key in keys:
            client = Account.from_key(key).address
            deposits.append(
                TransferSpec(
                    f"deposit:{client.lower()}:{per_client * price}",
                    journal.VAULT,
                    journal.client_account(client),
                    per_client * price,
                    TransferKind.DEPOSIT,
                )
            )
            session.add(Client(address=client, deposited_wei=per_client * price))
        journal.post_batch(session, deposits)
        for n in range(CONTRIBUTORS):
            owner = "0x" + f"{0xA0 + n:02x}" * 20
            session.add(
                Worker(
                    address="0x" + f"{0xB0 + n:02x}" * 20,
                    contributor=owner,
                    eligible=True,
                    checked_at=time.time() + 86_400,
                    last_seen=time.time() + 86_400,  # seen "recently" for the whole run
                )
            )


def requests(
    deployment: Deployment, keys: list[bytes], per_client: int, model: str, price: int, port: int
) -> list[list[bytes]]:
    """Every client's HTTP requests, in order, ready to send."""
    images = json.loads((ROOT / "models" / "digits-cnn" / "samples.json").read_text())["images"]
    expiry = int(time.time()) + 86_400
    streams = []
    for c, key in enumerate(keys):
        client = Account.from_key(key).address
        stream = []
        for n in range(1, per_client + 1):
            voucher = Voucher(client, n * price, expiry)
            signature = sign_voucher(deployment.vault_domain, voucher, key)
            image = np.asarray(images[(c + n) % len(images)], dtype=np.float32)
            body = json.dumps(
                {
                    "model": model,
                    "inputs": {"input": tensors.encode(image.reshape(1, 1, 8, 8))},
                    "voucher": {
                        "client": client,
                        "cumulative_amount_wei": str(n * price),
                        "expiry": expiry,
                    },
                    "signature": "0x" + signature.hex(),
                }
            ).encode()
            head = (
                f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            stream.append(head.encode() + body)
        streams.append(stream)
    return streams


async def _client(port: int, stream: list[bytes], statuses: list[int]) -> None:
    """One keep-alive connection sending one client's requests one after another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in stream:
            writer.write(request)
            statuses.append(await read_status(reader))
    finally:
        writer.close()


async def _drive(port: int, streams: list[list[bytes]]) -> tuple[float, list[int]]:
    statuses: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, s, statuses) for s in streams))
    return time.perf_counter() - start, statuses


def measure(args: argparse.Namespace, batch_max: int, tmp: Path) -> dict[str, Any]:
    data = tmp / f"batch-{batch_max}"
    data.mkdir(parents=True)
    url = fresh_postgres() if args.postgres else f"sqlite:///{data / 'ledger.db'}"
    deployment = Deployment(31337, *("0x" + os.urandom(20).hex() for _ in range(4)), 0)
    (data / "deployment.json").write_text(deployment.to_json())
    env = {
        "INFERLEDGER_DATA_DIR": str(data),
        "INFERLEDGER_DATABASE_URL": url,
        "INFERLEDGER_INGEST_BATCH_MAX": str(batch_max),
        "INFERLEDGER_WORKER_MAX_IN_FLIGHT": "10000",
        # clients send as fast as they can: measure admission, not the per-client limit
        "INFERLEDGER_RATE_LIMIT_BURST": "1000000",
    }
    ctx = Context(Settings(data_dir=data, database_url=url))
    (manifest,) = (
        m for m in load_models(ctx.settings.models_dir).values() if m.name == "digits-cnn"
    )
    per_client = -(-args.requests // args.clients)
    keys = [os.urandom(32) for _ in range(args.clients)]
    price = manifest.price_wei(1)
    seed(ctx, keys, per_client, price)
    port = free_port()
    streams = requests(deployment, keys, per_client, "0x" + manifest.sha256, price, port)
    argv = [sys.executable, "-m", "api.serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(args.workers), "--log-level", "warning"]
    with Processes(data / "logs") as procs:
        procs.start("api", argv, env=env, cwd=ROOT)
        wait_until("the API", http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
        warm = [s[:1] for s in streams]  # one request per client: connections, caches
        asyncio.run(_drive(port, warm))
        rest = [s[1:] for s in streams]
        elapsed, statuses = asyncio.run(_drive(port, rest))
    sent = sum(len(s) for s in rest)
    refused = sum(1 for s in statuses if s != 202)
    with Session(ctx.engine) as session:
        jobs = int(session.exec(select(func.count()).select_from(Job)).one())
        invariants.check_full(session)
    if refused or jobs != sent + len(warm):
        raise SystemExit(f"{refused} requests refused; {jobs} jobs for {sent + len(warm)} sent")
    return {"batch_max": batch_max, "requests": sent, "seconds": elapsed, "per_s": sent / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6_000, help="paid requests per run")
    parser.add_argument("--naive-requests", type=int, default=1_500, help="for the baseline")
    parser.add_argument("--clients", type=int, default=128, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="API processes (api.serve)")
    parser.add_argument("--batch-max", type=int, default=256, help="jobs per unit of work")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    database = "postgresql" if args.postgres else "sqlite"
    with tempfile.TemporaryDirectory(prefix="il-ingest-") as tmp:
        total = args.requests
        args.requests = args.naive_requests
        naive = measure(args, 1, Path(tmp))
        print(f"naive    {naive['requests']:>6,} requests  {naive['per_s']:>7,.0f} /s", flush=True)
        args.requests = total
        batched = measure(args, args.batch_max, Path(tmp))
        print(f"batched  {batched['requests']:>6,} requests  {batched['per_s']:>7,.0f} /s")
    ratio = batched["per_s"] / naive["per_s"]
    print(
        f"batched / naive = {ratio:.1f}x on {database}, {args.workers} API processes, "
        f"{args.clients} clients (goal: at least 1,000 requests/s)"
    )
    out = ROOT / "bench" / "results" / f"ingest-{database}.json"
    figures = {
        "database": database,
        "clients": args.clients,
        "api_workers": args.workers,
        "naive": naive,
        "batched": batched,
        "ratio": round(ratio, 2),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "run": uuid.uuid4().hex[:8],
    }
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
