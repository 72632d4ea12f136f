"""The whole system end to end, against raw onnxruntime on the same model, settings and cores,
measured in the same run (``bench/stack.py`` brings the parts up: Hardhat, API, Celery
worker, one device agent per contributor, each a process of its own on this machine).

- **Latency added** by verification: one client sends one paid request at a time (voucher
  signed beforehand), then long-polls ``GET /v1/jobs/{id}`` until the job is decided (both
  replicas computed, attested, submitted and reconciled by Celery). The figure is that
  round trip minus one raw inference of the same input (the median of ``session.run`` in
  this process, tokenisation included for a text model), p50 and p99.
- **Verified throughput**: ``--sizes`` jobs sent at once by ``--clients`` keep-alive
  connections, timed from the first request to the moment the database shows every job
  decided; against ``cores`` threads each running a raw session (one intra-op thread, as
  the agents) over the same rows, the best of two passes. The raw figures are measured
  before the system starts, so that its idle processes do not slow them down. With
  replication 2 every job runs twice, so 0.5 is the ceiling of the ratio. ``--trust-after
  N`` turns adaptive replication on (``--spot-check-bps``: the share of a trusted worker's
  jobs replicated anyway); each run prints the replicas assigned per job.
- **Peak RSS** (VmHWM) of the API, the Celery worker and a device agent (its main process
  and its largest inference process) after each size, jobs counted since start.

MiniLM's runs are ``--minilm-share`` (0.2) of each size: its jobs cost about 200 times the
CNN's. For latency the agents run with their defaults: an idle pull waits at the API up to
``--long-poll-s`` (2 s) and is answered when an assignment for it commits, and the client's
long poll when the decision commits (wake-ups through Redis, ``ledger/notify.py``); a lone
result is submitted at once. ``--long-poll-s 0`` measures the idle polling of before, fixed
at ``--idle-sleep-s``. For throughput (``--throughput-agents``): the agents' own defaults
(pulls of 16 new jobs, results waiting up to 0.1 s for company while others run), or
``latency``, the latency part's; when the two differ, the agents are restarted between the
parts. ``--api-server
uvicorn`` runs the API as ``make demo`` does instead of ``python -m api.serve``. Prints a
table and writes bench/results/system.json. Usage: ``.venv/bin/python bench/system.py [--models
digits-cnn,minilm-l6] [--sizes 1000,3000] [--latency-requests 200] [--replicas 2]
[--trust-after 0] [--spot-check-bps 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from sqlmodel import Session, col, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    children,
    cores,
    peak_rss_mib,
    read_status,
    table,
    tree_cpu_s,
    tree_peak_rss_mib,
    write_result,
)  # noqa: E402
from bench.stack import Stack, StackConfig, restart_devices, start  # noqa: E402
from inferledger.procs import Processes  # noqa: E402
from ledger.models import Assignment, Job, JobStatus  # noqa: E402
from protocol import tensors, text  # noqa: E402
from protocol.eip712 import Voucher, sign_voucher  # noqa: E402
from protocol.errors import ProtocolError  # noqa: E402
from protocol.manifest import Manifest, load_models  # noqa: E402
from worker.config import WorkerSettings  # noqa: E402
from worker.errors import WorkerError  # noqa: E402
from worker.model_files import model_bytes  # noqa: E402

SENTENCES = [
    "The parcel was left at the neighbour's door because nobody answered.",
    "Quarterly revenue grew by four percent, driven by subscriptions.",
    "How do I reset the password on my router without losing settings?",
    "Heavy rain is expected along the coast from Thursday evening.",
    "She plays the cello in a string quartet on Sunday afternoons.",
    "A short sentence.",
    "Refunds are issued to the original payment method within ten days.",
    "The museum reopens after renovation with a new wing for modern art.",
]


# The agents' settings for the throughput part, from the latency part's: their own defaults
# (results wait up to 0.1 s for company while others run; pulls of 16 new jobs, each asking
# for what they hold as well, within the API's pull_batch_max of 64), or the latency part's.
LONG_POLL_DEFAULT_S = WorkerSettings.model_fields["long_poll_s"].default
THROUGHPUT_AGENTS: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "defaults": lambda latency_env: {},
    "latency": lambda latency_env: dict(latency_env),
}


class Workload:
    """One model's rows: as the API takes them (a job body's payload) and as raw runs them,
    with the raw figures measured before any part of the system starts (``measure_raw``)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.raw_ms = 0.0  # one raw inference, median
        self.raw_rate = 0.0  # rows per second, ``cores`` threads
        self.names = [o.name for o in manifest.outputs]
        self.images = np.asarray(
            json.loads((ROOT / "models" / "digits-cnn" / "samples.json").read_text())["images"],
            dtype=np.float32,
        ).reshape(-1, 1, 8, 8)

    def payload(self, i: int) -> dict[str, Any]:
        if self.manifest.text is not None:
            return {"texts": [SENTENCES[i % len(SENTENCES)]]}
        return {"inputs": {"input": tensors.encode(self.images[i % len(self.images)][None])}}

    def feed(self, i: int) -> dict[str, Any]:
        if self.manifest.text is not None:
            return text.encode(self.manifest, [SENTENCES[i % len(SENTENCES)]])
        return {"input": self.images[i % len(self.images)][None]}

    def session(self) -> ort.InferenceSession:
        """A session with the agents' settings: one intra-op thread, sequential, level all."""
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(
            model_bytes(self.manifest), opts, providers=["CPUExecutionProvider"]
        )

    def raw_one_ms(self, rows: int) -> float:
        """The median of one raw inference (tokenising included for text), in ms."""
        session = self.session()
        samples = []
        for i in range(rows + 10):
            started = time.perf_counter()
            session.run(self.names, self.feed(i))
            samples.append((time.perf_counter() - started) * 1e3)
        return statistics.median(samples[10:])

    def measure_raw(self, rows: int) -> None:
        """On a machine where the system is not running yet: the baselines of this run."""
        self.raw_ms = self.raw_one_ms(min(rows, 300))
        self.raw_rate = max(self.raw_per_s(min(rows, 3000), cores()) for _ in range(2))

    def raw_per_s(self, rows: int, threads: int) -> float:
        """Rows per second of ``threads`` sessions run at once (onnxruntime drops the GIL);
        the feeds are prepared beforehand."""
        sessions = [self.session() for _ in range(threads)]
        feeds = [self.feed(i) for i in range(rows)]
        for s in sessions:
            s.run(self.names, feeds[0])

        def run(s: ort.InferenceSession) -> None:
            for feed in feeds:
                s.run(self.names, feed)

        workers = [threading.Thread(target=run, args=(s,)) for s in sessions]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * rows / (time.perf_counter() - started)


class Payer:
    """Clients with deposits, each signing increasing cumulative vouchers."""

    def __init__(self, stack: Stack, clients: int) -> None:
        self.stack = stack
        self.keys = [os.urandom(32) for _ in range(clients)]
        self.paid = [0] * clients
        self.expiry = int(time.time()) + 86_400

    def bodies(self, work: Workload, count: int, start: int) -> list[list[bytes]]:
        """``count`` job bodies, dealt to the clients in turn, each stream in voucher order."""
        from eth_account import Account

        price = work.manifest.price_wei(1)
        streams: list[list[bytes]] = [[] for _ in self.keys]
        for i in range(count):
            c = i % len(self.keys)
            self.paid[c] += price
            client = Account.from_key(self.keys[c]).address
            voucher = Voucher(client, self.paid[c], self.expiry)
            sig = sign_voucher(self.stack.deployment.vault_domain, voucher, self.keys[c])
            body = {
                "model": "0x" + work.manifest.sha256,
                **work.payload(start + i),
                "voucher": {
                    "client": client,
                    "cumulative_amount_wei": str(self.paid[c]),
                    "expiry": self.expiry,
                },
                "signature": "0x" + sig.hex(),
            }
            streams[c].append(json.dumps(body).encode())
        return [s for s in streams if s]


def decided(stack: Stack) -> tuple[int, int]:
    """Jobs accepted and jobs failed, from the database."""
    with Session(stack.ctx.engine) as session:
        rows = session.exec(
            select(Job.status, func.count())
            .where(col(Job.status).in_([JobStatus.ACCEPTED, JobStatus.FAILED]))
            .group_by(Job.status)
        ).all()
    counts = {str(status): int(n) for status, n in rows}
    return counts.get(JobStatus.ACCEPTED, 0), counts.get(JobStatus.FAILED, 0)


def replicas_assigned(stack: Stack) -> tuple[int, int]:
    """Jobs and the assignments made for them, from the database."""
    with Session(stack.ctx.engine) as session:
        jobs = session.exec(select(func.count()).select_from(Job)).one()
        assignments = session.exec(select(func.count()).select_from(Assignment)).one()
    return int(jobs), int(assignments)


def latency(stack: Stack, payer: Payer, work: Workload, requests: int, sent: int) -> dict[str, Any]:
    """One request at a time, each waited for: the round trips in ms."""
    streams = payer.bodies(work, requests + 10, sent)
    bodies = [b for stream in streams for b in stream]  # each client's vouchers in order
    samples: list[float] = []
    cpu: dict[str, float] = {}
    reference = [python_reference_ms()]
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        for n, body in enumerate(bodies):
            started = time.perf_counter()
            r = http.post(
                "/v1/jobs",
                content=body,
                headers={"Content-Type": "application/json"},
                params={"wait_s": 10},  # one exchange: answered once the job is decided
            )
            if r.status_code not in (200, 202):
                raise SystemExit(f"POST /v1/jobs answered {r.status_code}: {r.text}")
            job = r.json()
            while job["status"] not in ("accepted", "failed"):
                stack.procs.check_alive()
                job = http.get(f"/v1/jobs/{job['job_id']}", params={"wait_s": 10}).json()
            if job["status"] != "accepted":
                raise SystemExit(f"job {job['job_id']} {job['status']}: {job.get('failure')}")
            if n == 9:
                cpu = _cpu(stack)
            if n >= 10:  # the first ten warm every part
                samples.append((time.perf_counter() - started) * 1e3)
    cpu = {k: v - cpu[k] for k, v in _cpu(stack).items()}
    reference.append(python_reference_ms())
    raw = work.raw_ms
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "requests": len(samples),
        "e2e_ms_p50": round(statistics.median(samples), 2),
        "e2e_ms_p99": round(q[98], 2),
        "raw_ms_median": round(raw, 3),
        "added_ms_p50": round(statistics.median(samples) - raw, 2),
        "added_ms_p99": round(q[98] - raw, 2),
        # a fixed piece of Python work timed before and after (the machine's speed then: a
        # shared VM's varies by a third within minutes), and the added p50 in its units
        "python_reference_ms": round(statistics.mean(reference), 3),
        "added_p50_in_references": round(
            (statistics.median(samples) - raw) / statistics.mean(reference), 2
        ),
        # CPU ms a request costs each part (all its processes), averaged over the requests
        "cpu_ms_per_request": {k: round(v * 1e3 / len(samples), 2) for k, v in cpu.items()},
    }


def python_reference_ms() -> float:
    """The median of seven timings of a fixed piece of pure Python work (JSON, hashing,
    dicts: what a request's path is made of), in ms; about 10 ms on this machine."""
    doc = {"job_id": "0x" + "ab" * 32, "rows": list(range(64)), "ok": True, "n": 1.5}
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        for i in range(400):
            doc["n"] = i
            text = json.dumps(doc, sort_keys=True)
            hashlib.sha256(text.encode()).hexdigest()
            json.loads(text)
        timings.append((time.perf_counter() - started) * 1e3)
    return statistics.median(timings)


def _cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each part of the stack, and of this process (the client)."""
    parts = {"api": stack.pids["api"], "celery": stack.pids["celery_worker"]}
    parts |= {k: v for k, v in stack.pids.items() if k.startswith("device_")}
    out = {name: tree_cpu_s(pid) for name, pid in parts.items()}
    out["client"] = time.process_time()
    return out


async def _send_stream(port: int, stream: list[bytes], statuses: list[int]) -> None:
    """One keep-alive connection sending one client's requests one after another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in stream:
            head = (
                f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            statuses.append(await read_status(reader))
    finally:
        writer.close()


async def _send_all(port: int, streams: list[list[bytes]]) -> list[int]:
    statuses: list[int] = []
    await asyncio.gather(*(_send_stream(port, s, statuses) for s in streams))
    return statuses


def _waves(streams: list[list[bytes]], size: int) -> list[list[list[bytes]]]:
    """The streams cut into waves of about ``size`` jobs, each client's vouchers in order."""
    step = max(1, size // len(streams))
    longest = max(len(s) for s in streams)
    return [[s[i : i + step] for s in streams if s[i : i + step]] for i in range(0, longest, step)]


def throughput(
    stack: Stack, payer: Payer, work: Workload, count: int, sent: int, in_flight_max: int
) -> dict[str, Any]:
    """``count`` jobs sent as fast as the API takes them, at most ``in_flight_max`` of them
    undecided at once (the API refuses jobs that no device can take: its
    ``worker_max_in_flight`` is at most 10,000); seconds until every one is decided."""
    waves = _waves(payer.bodies(work, count, sent), in_flight_max // 2)
    before, _ = decided(stack)
    jobs_before, assigned_before = replicas_assigned(stack)
    port = int(stack.api_url.rsplit(":", 1)[1])
    statuses: list[int] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            done = 0
            for wave in waves:
                while done - (decided(stack)[0] - before) > in_flight_max // 2:
                    time.sleep(0.02)
                statuses.extend(asyncio.run(_send_all(port, wave)))
                done += sum(len(s) for s in wave)
        except BaseException as exc:  # reported by the measuring thread
            errors.append(exc)

    started = time.perf_counter()
    sender = threading.Thread(target=send, name="load", daemon=True)
    sender.start()
    while True:
        accepted, failed = decided(stack)
        refused = [s for s in statuses if s != 202]
        if failed or refused or errors:
            raise SystemExit(
                f"{failed} jobs failed, {len(refused)} requests refused "
                f"({refused[:1]}), {errors[:1]}; see {stack.procs.log_dir}"
            )
        if accepted - before >= count:
            break
        stack.procs.check_alive()
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    sender.join()
    raw = work.raw_rate
    verified = count / elapsed
    jobs_after, assigned_after = replicas_assigned(stack)
    return {
        "jobs": count,
        "seconds": round(elapsed, 2),
        "verified_per_s": round(verified, 1),
        "raw_per_s": round(raw, 1),
        "ratio": round(verified / raw, 4),
        "cores": cores(),
        # inferences run per job: replication as configured, or lower (adaptive replication)
        "replicas_per_job": round(
            (assigned_after - assigned_before) / max(1, jobs_after - jobs_before), 4
        ),
    }


def memory(stack: Stack, jobs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"after_jobs": jobs}
    out["api_mib"] = tree_peak_rss_mib(stack.pids["api"])
    out["celery_worker_mib"] = peak_rss_mib(stack.pids["celery_worker"])
    out["device_agent_mib"] = peak_rss_mib(stack.pids["device_1"])
    out["device_inference_mib"] = max(
        (tree_peak_rss_mib(p) or 0.0 for p in children(stack.pids["device_1"])), default=None
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits-cnn,minilm-l6")
    parser.add_argument("--sizes", default="1000,3000", help="jobs per throughput run, in turn")
    parser.add_argument("--minilm-share", type=float, default=0.2, help="MiniLM runs size × this")
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32, help="connections of the load")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--trust-after", type=int, default=0,
        help="adaptive replication: agreed replicated jobs before a worker runs jobs alone "
        "(0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--spot-check-bps", type=int, default=1_000,
        help="adaptive replication: trusted workers' jobs replicated anyway, basis points",
    )  # fmt: skip
    parser.add_argument("--in-flight-max", type=int, default=4_000, help="jobs undecided at once")
    parser.add_argument(
        "--long-poll-s", type=float, default=LONG_POLL_DEFAULT_S,
        help="latency part: how long an idle agent's pull waits at the API (0: idle polling)",
    )  # fmt: skip
    parser.add_argument(
        "--idle-sleep-s", type=float, default=0.05,
        help="latency part with --long-poll-s 0: the agents' fixed idle poll",
    )  # fmt: skip
    parser.add_argument(
        "--throughput-agents", choices=sorted(THROUGHPUT_AGENTS), default="defaults",
        help="the agents' settings for throughput: their defaults, or the latency part's",
    )  # fmt: skip
    parser.add_argument(
        "--api-server", choices=["serve", "uvicorn"], default="serve",
        help="python -m api.serve (as deployed), or plain uvicorn api.main:app (as make demo)",
    )  # fmt: skip
    parser.add_argument(
        "--api-workers", type=int, default=1,
        help="api.serve's processes (the bench's default: one, as SQLite is written best "
        "from one process)",
    )  # fmt: skip
    parser.add_argument("--name", default="system", help="bench/results/<name>.json")
    parser.add_argument("--keep", type=Path, help="a folder to keep data and logs in")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    latency_env: dict[str, str] = {}  # the agents' defaults, but for the idle wait
    if args.long_poll_s != LONG_POLL_DEFAULT_S:
        latency_env["INFERLEDGER_WORKER_LONG_POLL_S"] = str(args.long_poll_s)
    if args.long_poll_s == 0:  # the idle polling of before the wake-ups, at a fixed pace
        latency_env["INFERLEDGER_WORKER_POLL_INTERVAL_S"] = str(args.idle_sleep_s)
        latency_env["INFERLEDGER_WORKER_MAX_IDLE_SLEEP_S"] = str(args.idle_sleep_s)
    throughput_env = THROUGHPUT_AGENTS[args.throughput_agents](latency_env)
    devices = max(1, cores() // 2)  # two agents: together one inference process per core
    with tempfile.TemporaryDirectory(prefix="il-system-") as tmp:
        data = args.keep or Path(tmp)
        cfg = StackConfig(
            data,
            replicas=args.replicas,
            trust_after=args.trust_after,
            spot_check_bps=args.spot_check_bps,
            device_workers=devices,
            worker_env=latency_env if args.latency_requests > 0 else throughput_env,
            api_server=args.api_server,
            api_workers=args.api_workers,
        )
        with Processes(data / "logs") as procs:
            figures = run(cfg, procs, args, sizes, throughput_env)
    figures["settings"] = {
        "replicas": args.replicas,
        "trust_after": args.trust_after,
        "spot_check_bps": args.spot_check_bps,
        "device_workers": devices,
        "api_server": args.api_server,
        "api_workers": args.api_workers,
        "latency_agents": latency_env,
        "throughput_agents": args.throughput_agents,
        **throughput_env,
    }
    report(figures)
    write_result(
        args.name,
        {k: figures[k] for k in ("latency", "throughput", "memory")},
        {"raw_onnxruntime": "same model, rows, session settings; cores threads"},
        vars(args) | {"keep": str(args.keep) if args.keep else None},
        settings=figures["settings"],
    )


def run(
    cfg: StackConfig,
    procs: Processes,
    args: argparse.Namespace,
    sizes: list[int],
    throughput_env: dict[str, str],
) -> dict[str, Any]:
    by_name = {m.name: m for m in load_models(ROOT / "models").values()}
    works = []
    for name in args.models.split(","):
        print(f"{name}: raw onnxruntime, before the system starts", flush=True)
        work = Workload(by_name[name])
        try:
            work.measure_raw(max(sizes))  # builds minilm-l6 into the model cache if need be
        except (WorkerError, ProtocolError) as exc:
            print(f"skipped {name}: {exc.detail}")
            continue
        works.append(work)
    if not works:
        raise SystemExit("no model to measure")
    stack = start(cfg, procs)
    payer = Payer(stack, args.clients)
    top = max(w.manifest.price_wei(1) for w in works)
    stack.fund(payer.keys, top * (sum(sizes) + args.latency_requests * 2 + 100))
    figures: dict[str, Any] = {"latency": {}, "throughput": {}, "memory": []}
    sent = 0
    for work in works if args.latency_requests > 0 else []:
        name = work.manifest.name
        print(f"{name}: latency, {args.latency_requests} requests one at a time", flush=True)
        figures["latency"][name] = latency(stack, payer, work, args.latency_requests, sent)
        sent += args.latency_requests + 10
    if stack.cfg.worker_env != throughput_env:
        print("device agents: restarted with the throughput settings", flush=True)
        restart_devices(stack, throughput_env)
    for size in sizes:
        for work in works:
            name = work.manifest.name
            count = size if work.manifest.text is None else max(50, int(size * args.minilm_share))
            print(f"{name}: throughput, {count} jobs", flush=True)
            figures["throughput"].setdefault(name, []).append(
                throughput(stack, payer, work, count, sent, args.in_flight_max)
            )
            sent += count
        figures["memory"].append(memory(stack, sent))
    return figures


def report(figures: dict[str, Any]) -> None:
    rows: list[list[Any]] = [
        [name, f["requests"], f["e2e_ms_p50"], f["e2e_ms_p99"], f["raw_ms_median"],
         f["added_ms_p50"], f["added_ms_p99"], f["python_reference_ms"],
         f["added_p50_in_references"]]
        for name, f in figures["latency"].items()
    ]  # fmt: skip
    heads = ["latency", "requests", "e2e p50 ms", "e2e p99 ms", "raw ms", "added p50", "added p99"]
    heads += ["ref ms", "added/ref"]
    print("\n" + table(heads, rows))
    cpu = {name: f["cpu_ms_per_request"] for name, f in figures["latency"].items()}
    parts = sorted({p for c in cpu.values() for p in c})
    rows = [[name, *(c.get(p, "") for p in parts)] for name, c in cpu.items()]
    print("\n" + table(["CPU ms per request", *parts], rows))
    rows = [
        [name, f["jobs"], f["verified_per_s"], f["raw_per_s"], f["ratio"], f["replicas_per_job"]]
        for name, runs in figures["throughput"].items()
        for f in runs
    ]
    heads = ["throughput", "jobs", "verified/s", "raw/s", "ratio", "replicas/job"]
    print("\n" + table(heads, rows))
    rows = [
        ["", m["after_jobs"], m["api_mib"], m["celery_worker_mib"], m["device_agent_mib"],
         m["device_inference_mib"]]
        for m in figures["memory"]
    ]  # fmt: skip
    heads = ["peak RSS MiB", "after jobs", "API", "Celery", "agent", "inference"]
    print("\n" + table(heads, rows))


if __name__ == "__main__":
    main()
