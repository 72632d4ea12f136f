"""The body limit keeps memory flat: a 50 MB body, streamed without Content-Length or under
a Content-Length that lies, is refused (413) while the server's peak resident memory
(VmHWM, reset before each request) grows by no more than a few MB."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.main
from inferledger.procs import free_port, http_ok, wait_until
from ledger.config import REPO_ROOT, get_settings
from protocol.contracts import Deployment

BODY_BYTES = 50 * 1024 * 1024
CHUNK = b" " * 65_536  # JSON whitespace, sent over and over: the client holds 64 KiB
GROWTH_MAX_KB = 6 * 1024  # a few MB; a body kept in memory would be 50 MB


def _peak_kb(pid: int | str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def _reset_peak(pid: int | str) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(pid, port) of one uvicorn process serving the app with its default 1 MiB limit. A
    refused body is refused before any route runs: no chain or database is needed."""
    data = tmp_path_factory.mktemp("body-memory")
    dep = Deployment(31337, *("0x" + os.urandom(20).hex() for _ in range(4)), 0)
    (data / "deployment.json").write_text(dep.to_json())
    port = free_port()
    env = {**os.environ, "INFERLEDGER_DATA_DIR": str(data)}
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT)
    try:
        wait_until("the API", http_ok(f"http://127.0.0.1:{port}/healthz"), 60)
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _send(port: int, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request while reading the answer on another thread (the server answers and
    closes before the body is all sent); return the answer, head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        answer = bytearray()

        def complete() -> bool:
            head, sep, body = bytes(answer).partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            return bool(sep) and (length is None or len(body) >= int(length.group(1)))

        def read() -> None:
            try:
                while not complete() and (got := sock.recv(65_536)):
                    answer.extend(got)
            except OSError:
                pass

        reader = threading.Thread(target=read)
        reader.start()
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:  # the server closed the connection: expected
            pass
        reader.join(timeout=30)
        return bytes(answer)


def _chunked() -> Iterator[bytes]:
    framed = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
    for _ in range(BODY_BYTES // len(CHUNK)):
        yield framed
    yield b"0\r\n\r\n"


def _raw() -> Iterator[bytes]:
    for _ in range(BODY_BYTES // len(CHUNK)):
        yield CHUNK


def _head(extra: str) -> bytes:
    return (
        "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{extra}\r\n\r\n"
    ).encode()


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def test_body_limit_a_chunked_50_mb_body_is_413_with_memory_flat(server: tuple[int, int]) -> None:
    pid, port = server
    head = _head("Transfer-Encoding: chunked")
    assert _status(_send(port, head, _chunked())) == 413  # warm: first-request allocations
    _reset_peak(pid)
    before = _peak_kb(pid)
    answer = _send(port, head, _chunked())
    assert _status(answer) == 413
    assert b"body_too_large" in answer
    assert _peak_kb(pid) - before < GROWTH_MAX_KB


def test_body_limit_a_lying_content_length_keeps_memory_flat(server: tuple[int, int]) -> None:
    """HTTP frames a body by its Content-Length: the server reads the 64 KiB it was promised
    (not JSON: refused, nothing admitted), takes the rest for a malformed next request and
    closes. It never holds the 50 MB. (In-process, below: the limit counts what it is given
    whatever the header says.)"""
    pid, port = server
    head = _head(f"Content-Length: {len(CHUNK)}")
    _send(port, head, _raw())
    _reset_peak(pid)
    before = _peak_kb(pid)
    answer = _send(port, head, _raw())
    assert 400 <= _status(answer) < 500
    assert _peak_kb(pid) - before < GROWTH_MAX_KB


def test_body_limit_counts_past_a_lying_content_length_in_process() -> None:
    """An ASGI server handing over more than the header promised still meets the limit."""
    get_settings.cache_clear()
    app = api.main.create_app()
    sent: list[dict[str, Any]] = []
    given = 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        given += len(CHUNK)
        return {"type": "http.request", "body": CHUNK, "more_body": given < BODY_BYTES}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    _reset_peak("self")
    before = _peak_kb("self")
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"body_too_large" in sent[1]["body"]
    assert given <= get_settings().max_body_bytes + len(CHUNK)  # stopped reading at the limit
    assert _peak_kb("self") - before < GROWTH_MAX_KB


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/auth/challenge"])
def test_deeply_nested_json_is_refused_without_crashing_the_process(
    server: tuple[int, int], route: str
) -> None:
    """200 KB of nested brackets, under the body limit: py_ecc raises the recursion limit to
    100,000 at import, where json.loads overflowed the C stack and the process died with
    SIGSEGV (``protocol.recursion.bound`` sets it back)."""
    pid, port = server
    deep = b"[" * 100_000 + b"]" * 100_000
    r = httpx.post(
        f"http://127.0.0.1:{port}{route}",
        content=deep,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"] == "http_error", r.text
    assert Path(f"/proc/{pid}").exists()
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
