"""Ctrl-C in the middle of ``inferledger demo`` stops every process it started; with
``--stay`` the system stays up after the demo, its explorer answering, until Ctrl-C; a demo
without Redis says so and how to start it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inferledger.procs import free_port
from ledger.config import REPO_ROOT

CLI = [sys.executable, "-m", "inferledger.cli", "demo"]


def _read_until(
    proc: subprocess.Popen[str], pattern: str, timeout_s: float
) -> tuple[re.Match[str], str]:
    seen = ""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        match = re.search(pattern, seen)
        if match:
            return match, seen
    raise AssertionError(f"{pattern!r} not printed within {timeout_s} s; output:\n{seen}")


def _demo(redis_url: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "INFERLEDGER_REDIS_URL": redis_url, "COLUMNS": "200"}
    return subprocess.Popen(
        [*CLI, *args, "--data-dir", str(tmp_path / "demo")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.e2e
def test_demo_interrupted_stops_every_process(redis_url: str, tmp_path: Path) -> None:
    proc = _demo(redis_url, tmp_path, "--requests", "400")
    try:
        rpc = _read_until(proc, r"Hardhat node on (http://127\.0\.0\.1:\d+)", 90)[0].group(1)
        api = _read_until(proc, r"API on (http://127\.0\.0\.1:\d+)", 120)[0].group(1)
        _read_until(proc, r"paid requests submitted", 120)  # mid-run: workers busy
        assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "every process was stopped" in out
    _nothing_left(tmp_path, rpc, api)


def _nothing_left(tmp_path: Path, *urls: str) -> None:
    for url in urls:  # nothing answers on the ports the demo used
        with pytest.raises(httpx.TransportError):
            httpx.post(url, json={}, timeout=2)
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == "", f"processes left running: {leftover.stdout}"


@pytest.mark.e2e
def test_demo_stays_up_with_its_explorer_until_ctrl_c(redis_url: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    proc = _demo(redis_url, tmp_path, "--requests", "3", "--stay", "--json", str(summary))
    try:
        rpc = _read_until(proc, r"Hardhat node on (http://127\.0\.0\.1:\d+)", 90)[0].group(1)
        match, seen = _read_until(proc, r"explorer: (http://\S+)/explorer", 240)
        api = match.group(1)
        assert "audit" in seen and "passed" in seen, seen
        time.sleep(1)  # still up after the demo ended
        assert json.loads(summary.read_text())["audit_ok"] is True  # written before the stay
        page = httpx.get(f"{api}/explorer", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        epochs = httpx.get(f"{api}/v1/epochs", timeout=10).json()
        assert epochs and f'href="/explorer/epochs/{epochs[0]["number"]}"' in page.text
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen + out
    _nothing_left(tmp_path, rpc, api)


def test_demo_without_redis_says_how_to_start_it(tmp_path: Path) -> None:
    env = {**os.environ, "INFERLEDGER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = subprocess.run(
        [*CLI, "--requests", "1", "--data-dir", str(tmp_path / "demo")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Redis is not reachable" in done.stderr + done.stdout
    assert "redis-server --daemonize yes" in done.stderr + done.stdout
    assert not (tmp_path / "demo" / "logs").exists()  # nothing was started
