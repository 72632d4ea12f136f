"""The processes of the chaos scenario (``inferledger.chaos``) and the ways to hurt them: a
Celery worker and beat on a queue of their own, a Redis server of our own, SIGKILLs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from celery import Celery

from inferledger.procs import Processes, free_port, wait_until
from ledger.config import REPO_ROOT, Settings
from ledger.parking import deliveries_key

DISRUPTIONS = ("kill-child", "kill-worker", "flush-redis", "restart-redis")
WORKER_SETTINGS = {  # short limits, so that what a lost worker held comes back within seconds
    "INFERLEDGER_RECONCILE_INTERVAL_S": "1",
    "INFERLEDGER_SWEEP_INTERVAL_S": "2",
    "INFERLEDGER_EPOCH_INTERVAL_S": "3600",  # no chain here: epochs, slashes, index never due
    "INFERLEDGER_INDEX_INTERVAL_S": "3600",
    "INFERLEDGER_CELERY_TASK_SOFT_TIME_LIMIT_S": "5",
    "INFERLEDGER_CELERY_TASK_TIME_LIMIT_S": "6",
    "INFERLEDGER_CELERY_VISIBILITY_TIMEOUT_S": "8",
    "INFERLEDGER_CELERY_RESTORE_INTERVAL_S": "1",
}


class RedisServer:
    """A Redis server of our own on a free port, without persistence, that can be killed
    and started again (empty) on the same port."""

    def __init__(self, procs: Processes) -> None:
        self.procs, self.port = procs, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        self.proc = self.procs.start("redis", [*argv, "--save", "", "--appendonly", "no"])
        wait_until("the Redis server", self.answers, 10)

    def answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def restart(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
        self.start()


@contextmanager
def claimed_redis_db(base_url: str, first: int = 15, last: int = 8) -> Iterator[str]:
    """A Redis database index of its own on a shared server, emptied before and after use;
    claimed with a key in database 0 so two runs at once never flush each other's."""
    admin = redis.Redis.from_url(base_url)
    stem = base_url.rsplit("/", 1)[0]
    for db in range(first, last - 1, -1):
        claim = f"inferledger:chaos-claim:{db}"
        if admin.set(claim, os.getpid(), nx=True, ex=900):
            break
    else:
        raise RuntimeError(f"Redis databases {last}..{first} are all claimed")
    url = f"{stem}/{db}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()
        admin.delete(claim)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started by ``Processes`` and everything in its process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, ... (man 5 proc)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):  # gone meanwhile
            if int(_stat(entry.name)[1]) == pid:
                found.append(int(entry.name))
    return found


def busiest_children(pid: int, window_s: float = 0.05) -> list[int]:
    """The pool process that used the most CPU over ``window_s`` (the one running a task);
    all of them if none did."""
    children = children_of(pid)

    def ticks() -> dict[int, int]:
        out = {}
        for child in children:
            with contextlib.suppress(OSError):
                fields = _stat(child)
                out[child] = int(fields[11]) + int(fields[12])  # utime + stime
        return out

    before = ticks()
    time.sleep(window_s)  # a measuring window, not a wait for an event
    used = {c: t - before.get(c, t) for c, t in ticks().items()}
    busiest = max(used, key=lambda c: used[c], default=None)
    return [busiest] if busiest is not None and used[busiest] > 0 else children


class CeleryCluster:
    """A Celery worker (prefork) and beat serving ``settings.celery_queue``, started in
    ``procs`` with the settings passed on in their environment."""

    def __init__(
        self,
        procs: Processes,
        settings: Settings,
        *,
        concurrency: int = 2,
        include: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        redis_server: RedisServer | None = None,
    ) -> None:
        self.procs, self.settings, self.redis_server = procs, settings, redis_server
        self.queue, self.concurrency, self.include = settings.celery_queue, concurrency, include
        self.env = {
            **WORKER_SETTINGS,
            "INFERLEDGER_MODE": "dev",
            "INFERLEDGER_DATA_DIR": str(settings.data_dir),
            "INFERLEDGER_DATABASE_URL": settings.db_url,
            "INFERLEDGER_REDIS_URL": settings.redis_url,
            "INFERLEDGER_CELERY_QUEUE": self.queue,
            "INFERLEDGER_RECONCILE_BATCH_SIZE": str(settings.reconcile_batch_size),
            "INFERLEDGER_REPLICAS": str(settings.replicas),
            "INFERLEDGER_MAX_REPLICAS": str(settings.max_replicas),
            "INFERLEDGER_FEE_BPS": str(settings.fee_bps),
            **(env or {}),
        }
        self.producer = Celery("chaos-producer", broker=settings.redis_url, set_as_current=False)
        self.producer.conf.broker_connection_retry_on_startup = True
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.revived: Counter[str] = Counter()

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        argv = [sys.executable, "-m", "celery", "-A", "ledger.celery_app", "worker", "-P"]
        argv += ["prefork", "-c", str(self.concurrency), "-Q", self.queue, "-n"]
        argv += [f"{self.queue}-{self.starts}@%h", "--loglevel", "INFO"]
        argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
        argv += [f"--include={m}" for m in self.include]
        self.worker = self.procs.start("celery-worker", argv, env=self.env, cwd=REPO_ROOT)
        return self.worker

    def start_beat(self) -> None:
        schedule = self.settings.data_dir / "celerybeat-schedule"
        argv = [sys.executable, "-m", "celery", "-A", "ledger.celery_app", "beat"]
        argv += ["--loglevel", "INFO", "-s", str(schedule)]
        self.beat = self.procs.start("celery-beat", argv, env=self.env, cwd=REPO_ROOT)

    def supervise(self) -> None:
        """Start again a worker or beat that exited, as systemd's ``Restart=always`` would:
        kombu 5.7 can end a worker on a lost broker connection (docs/operations.md)."""
        if self.worker is not None and self.worker.poll() is not None:
            self.revived["worker"] += 1
            self.start_worker()
        if self.beat is not None and self.beat.poll() is not None:
            self.revived["beat"] += 1
            self.start_beat()

    def wait(self, what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait for ``predicate`` under supervision."""

        def probe() -> bool:
            self.supervise()
            return predicate()

        wait_until(what, probe, timeout_s, 0.02)

    def send(self, task: str, *args: object) -> str:
        """Queue ``task`` as the API does; returns its task id."""
        return str(self.producer.send_task(task, args=list(args), queue=self.queue).id)

    def disrupt(self, kind: str) -> None:
        if kind == "kill-child" and self.worker is not None:
            for pid in busiest_children(self.worker.pid):
                os.kill(pid, signal.SIGKILL)
        elif kind == "kill-worker" and self.worker is not None:
            kill_group(self.worker)
            self.start_worker()
        elif kind == "flush-redis":
            redis.Redis.from_url(self.settings.redis_url).flushdb()
        elif kind == "restart-redis" and self.redis_server is not None:
            self.redis_server.restart()
        else:
            raise ValueError(f"cannot {kind} here")

    def broker_quiet(self) -> bool:
        """No message is held unacknowledged (a dead worker's comes back after the
        visibility timeout) and no delivery is being counted (a finished one clears its
        count)."""
        client = redis.Redis.from_url(self.settings.redis_url)
        counts = next(client.scan_iter(deliveries_key(self.settings, "*"), count=1000), None)
        return counts is None and client.hlen(f"{self.queue}:unacked") == 0
