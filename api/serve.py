"""``python -m api.serve``: the API as several processes on one port, each with a listening
socket of its own (``SO_REUSEPORT``), under a supervisor that starts a dead one again.

Why not ``uvicorn --workers``: its processes share one listening socket, and whichever wakes
first takes the next connection. Keep-alive clients that connect together are then split
unevenly for as long as they stay connected (128 of them split 41 to 87 on this 2-core
machine), and the busier process bounds the throughput while the other idles. With a socket
per process the kernel spreads connections by their addresses, and paid job ingest rose by
about a fifth in the same run (``bench/ingest.py``; docs/performance.md). Where the platform
has no ``SO_REUSEPORT`` the processes share one socket, as uvicorn's do.

The supervisor stops every process on SIGTERM or SIGINT (each finishes the requests it holds,
as uvicorn does on SIGTERM); on Linux they also get SIGTERM if the supervisor dies by SIGKILL.
It starts again, after a delay that doubles up to
``MAX_RESTART_DELAY_S``, a process that exits while it should run.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

logger = logging.getLogger("api.serve")

FIRST_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0
STOP_TIMEOUT_S = 15.0
BACKLOG = 2048
PR_SET_PDEATHSIG = 1
STARTUP_FAILED = 3  # uvicorn's own exit status when the app does not start


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """In a child before it runs uvicorn: on Linux, have the kernel send it SIGTERM when the
    supervisor dies, even by SIGKILL, so no API process outlives it unsupervised."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: stopped with the supervisor's group only
        pass


class Supervisor:
    """``workers`` uvicorn processes serving ``api.main:app``, one per socket."""

    def __init__(self, sockets: Sequence[socket.socket], log_level: str) -> None:
        self.sockets = sockets
        self.log_level = log_level
        self.children: list[subprocess.Popen[bytes] | None] = [None] * len(sockets)
        self.stopping = threading.Event()

    def _start(self, n: int) -> None:
        fd = self.sockets[n].fileno()
        argv = [sys.executable, "-m", "api.serve", "--serve-fd", str(fd)]
        argv += ["--log-level", self.log_level]
        self.children[n] = subprocess.Popen(argv, pass_fds=(fd,), preexec_fn=_die_with_parent)
        logger.info("API process %d started (pid %d)", n, self.children[n].pid)  # type: ignore[union-attr]

    def run(self) -> int:
        for n in range(len(self.sockets)):
            self._start(n)
        delays = [FIRST_RESTART_DELAY_S] * len(self.sockets)
        while not self.stopping.wait(0.2):
            for n, child in enumerate(self.children):
                if child is None or child.poll() is None:
                    continue
                logger.warning(
                    "API process %d (pid %d) exited with %s; starting it again in %.1f s",
                    n,
                    child.pid,
                    child.returncode,
                    delays[n],
                )
                if self.stopping.wait(delays[n]):
                    break
                delays[n] = min(delays[n] * 2, MAX_RESTART_DELAY_S)
                self._start(n)
        return self._stop_all()

    def _stop_all(self) -> int:
        running = [c for c in self.children if c is not None and c.poll() is None]
        for child in running:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in running:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        logger.info("API processes stopped")
        return 0


def serve_fd(fd: int, log_level: str) -> int:
    """One API process: uvicorn serving ``api.main:app`` on the inherited listening socket.
    Not ``uvicorn --fd``: it wraps the descriptor as an AF_UNIX socket whatever it is, so
    asyncio takes its TCP connections for Unix ones and leaves Nagle's algorithm on; a
    response written in two segments then waited for the client's delayed ACK (about 40 ms
    a request here). ``socket.socket(fileno=)`` reads the real family."""
    import uvicorn

    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn.Config("api.main:app", log_level=log_level))
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.serve",
        description="Serve the inferledger API as several processes on one port.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="API processes (default: one per CPU)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level",
    )
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)  # a supervised child
    args = parser.parse_args(argv)
    if args.serve_fd is not None:
        return serve_fd(args.serve_fd, args.log_level)
    if not 1 <= args.workers <= 256:
        parser.error("--workers must be between 1 and 256")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    try:
        if reuse_port:
            sockets = [listening_socket(args.host, args.port, True) for _ in range(args.workers)]
        else:
            sockets = [listening_socket(args.host, args.port, False)] * args.workers
    except OSError as exc:
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {exc.strerror}\n")
    supervisor = Supervisor(sockets, args.log_level)

    def _on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping the API processes", signum)
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    logger.info(
        "serving the API on %s:%d with %d processes%s",
        args.host,
        args.port,
        args.workers,
        "" if reuse_port else " (one shared socket: no SO_REUSEPORT here)",
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
