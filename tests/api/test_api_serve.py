"""``python -m api.serve``: processes with a listening socket each on one port, connections
spread among them, a killed process started again, and all of them stopped on SIGTERM."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferledger.procs import free_port, http_ok, wait_until
from ledger.config import REPO_ROOT
from protocol.contracts import Deployment

WORKERS = 2


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _sockets(pid: int, port: int) -> tuple[set[int], int]:
    """The inodes of ``pid``'s sockets listening on ``port``, and how many of its sockets
    are connections established on it (from /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    listening, established = set(), 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], int(fields[9])
        if local_port != port or inode not in inodes:
            continue
        if state == "0A":  # LISTEN
            listening.add(inode)
        elif state == "01":  # ESTABLISHED
            established += 1
    return listening, established


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    dep = Deployment(31337, *("0x" + os.urandom(20).hex() for _ in range(4)), 0)
    (tmp_path / "deployment.json").write_text(dep.to_json())
    env = {
        **os.environ,
        "INFERLEDGER_DATA_DIR": str(tmp_path),
        "INFERLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    port = free_port()
    argv = [sys.executable, "-m", "api.serve", "--port", str(port), "--workers", str(WORKERS)]
    proc = subprocess.Popen([*argv, "--log-level", "warning"], cwd=REPO_ROOT, env=env)
    try:
        wait_until("the API", http_ok(f"http://127.0.0.1:{port}/healthz"), 90)
        wait_until("every API process", lambda: len(_children(proc.pid)) == WORKERS, 30)
        yield proc, port
    finally:
        if proc.poll() is None:
            children = _children(proc.pid)  # a killed supervisor's children are not listed
            proc.kill()
            proc.wait()
            for child in children:  # they stop of themselves (PR_SET_PDEATHSIG); make sure
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_serve_spreads_connections_over_processes_with_a_socket_each(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = served
    children = _children(proc.pid)
    wait_until(
        "every process serving",
        lambda: all(_sockets(c, port)[0] for c in children),
        30,
    )
    listening = [_sockets(c, port)[0] for c in children]
    assert len(set().union(*listening)) == WORKERS  # not one socket shared
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}") for _ in range(64)]
    try:
        for client in clients:  # keep-alive connections, all open at once
            assert client.get("/healthz").status_code == 200
        per_process = [_sockets(c, port)[1] for c in children]
        assert sum(per_process) == 64
        # the kernel hashes connections over the sockets: 32 each on average; below 12 has a
        # chance of about 1e-7 (binomial), while one shared socket gives what it gives
        assert min(per_process) >= 12, per_process
    finally:
        for client in clients:
            client.close()


def test_serve_starts_a_killed_process_again_and_stops_all_on_sigterm(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = served
    victim, survivor = _children(proc.pid)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        "a new API process",
        lambda: len(_children(proc.pid)) == WORKERS and victim not in _children(proc.pid),
        30,
    )
    wait_until("the API", http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
    children = _children(proc.pid)
    assert survivor in children
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for child in children:  # stopped and reaped by the supervisor
        assert not Path(f"/proc/{child}").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_serve_refuses_a_port_in_use_and_bad_worker_counts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "api.serve", "--port", str(port), "--workers", "1"]
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    argv = [sys.executable, "-m", "api.serve", "--workers", "0"]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers must be between 1 and 256" in done.stderr


def test_serve_processes_stop_when_the_supervisor_is_killed(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = served
    children = _children(proc.pid)
    proc.kill()  # SIGKILL: no handler runs; the kernel tells the children (PR_SET_PDEATHSIG)
    proc.wait()
    wait_until(
        "the orphaned API processes to stop",
        lambda: not any(Path(f"/proc/{c}").exists() for c in children),
        30,
    )
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def _their_socket(pid: int, peer: tuple[str, int]) -> socket.socket:
    """A duplicate of the socket in process ``pid`` connected to ``peer`` (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if not os.readlink(fd).startswith("socket:["):
                continue
            dup = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd.name), 0)
            if dup < 0 and ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
                pytest.skip("pidfd_getfd is not allowed here (Linux < 5.6, or no ptrace)")
            if dup < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            sock = socket.socket(fileno=dup)
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername() == peer:
                    return sock
            except OSError:  # not connected
                pass
            sock.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"no socket of {pid} is connected to {peer}")


def test_serve_answers_on_tcp_sockets_with_nagle_off(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    """Each process's connections are TCP sockets with TCP_NODELAY, as uvicorn's own are.
    ``uvicorn --fd`` took the inherited socket for a Unix one and left Nagle's algorithm on:
    a response written in two segments then waited for the client's delayed ACK, about
    40 ms a request."""
    proc, port = served
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        assert client.get("/healthz").status_code == 200  # the connection is accepted
        stream = client.get("/healthz").extensions["network_stream"]
        mine = stream.get_extra_info("socket").getsockname()
        for child in _children(proc.pid):
            try:
                theirs = _their_socket(child, mine)
            except AssertionError:
                continue
            with theirs:
                assert theirs.family == socket.AF_INET
                assert theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            return
    raise AssertionError("no API process holds the connection")
