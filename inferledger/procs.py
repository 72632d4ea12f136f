"""Start and stop the system's processes: each in its own process group, its output in a
log file, stopped with SIGTERM then SIGKILL, also when the caller fails or is interrupted."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    what: str, probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (httpx.TransportError, ConnectionError):  # not up yet
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"{what} was not ready within {timeout_s:.0f} s")


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2).status_code == 200


def rpc_ok(url: str) -> Callable[[], bool]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    return lambda: httpx.post(url, json=body, timeout=2).status_code == 200


def start_hardhat_node(
    procs: Processes, port: int, repo_root: Path, timeout_s: float = 90.0
) -> str:
    """Start a local Hardhat node (the project's own, from node_modules) and wait for RPC."""
    hardhat = str(repo_root / "node_modules" / ".bin" / "hardhat")
    argv = [hardhat, "node", "--hostname", "127.0.0.1", "--port", str(port)]
    procs.start("hardhat", argv, cwd=repo_root)
    url = f"http://127.0.0.1:{port}"
    wait_until("the Hardhat node", rpc_ok(url), timeout_s)
    return url


class Processes:
    """A set of child processes that are all stopped on exit, however the block ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        self.children.append((name, proc))
        logger.info("started %s (pid %d)", name, proc.pid)
        return proc

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; "
                    f"see {self.log_dir / (name + '.log')}"
                )

    def stop(self, name: str, timeout_s: float = 10.0) -> None:
        for child_name, proc in self.children:
            if child_name == name:
                _stop(proc, timeout_s)

    def stop_all(self, timeout_s: float = 10.0) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, proc in reversed(self.children):
            _stop(proc, timeout_s)
        self.children.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
