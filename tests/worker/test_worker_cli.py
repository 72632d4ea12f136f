"""``inferledger worker`` commands: init, clear failures, and a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner
from worker_fake_api import FakeApi, make_assignment

from protocol.manifest import load_models
from worker.cli import app
from worker.keys import load_key

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_init_writes_a_dev_key_and_prints_the_address(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    result = runner.invoke(app, ["init", "--key-file", str(path)])
    assert result.exit_code == 0, result.output
    address = result.stdout.strip().splitlines()[-1]
    assert load_key(path, None).address == address


def test_init_with_password_env_writes_a_keystore(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    env = {"WORKER_PW": "s3cret"}
    result = runner.invoke(
        app, ["init", "--key-file", str(path), "--password-env", "WORKER_PW"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "crypto" in json.loads(path.read_text())
    assert load_key(path, "s3cret").address == result.stdout.strip().splitlines()[-1]


def test_init_refuses_a_missing_password_variable(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["init", "--key-file", str(tmp_path / "k.json"), "--password-env", "NOPE_UNSET"]
    )
    assert result.exit_code != 0
    assert "NOPE_UNSET" in result.output


def test_run_fails_clearly_on_a_bad_key_file(tmp_path: Path, models_dir: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text("{}")
    result = runner.invoke(
        app, ["run", "--key-file", str(bad), "--models-dir", str(models_dir), "--json"]
    )
    assert result.exit_code == 1
    assert "key file" in result.output


def test_run_fails_clearly_on_a_bad_models_dir(tmp_path: Path, key_file: Path) -> None:
    result = runner.invoke(
        app, ["run", "--key-file", str(key_file), "--models-dir", str(tmp_path / "x"), "--json"]
    )
    assert result.exit_code == 1
    assert "not a directory" in result.output


def test_run_refuses_bad_settings(models_dir: Path, key_file: Path) -> None:
    unset: dict[str, str | None] = {"INFERLEDGER_WORKER_KEY_FILE": None}
    result = runner.invoke(app, ["run", "--models-dir", str(models_dir)], env=unset)
    assert result.exit_code == 2
    assert "key_file" in result.output
    result = runner.invoke(app, ["run", "--key-file", str(key_file), "--opt-level", "fast"])
    assert result.exit_code == 2
    assert "--opt-level" in result.output


def _session_members(session_id: int) -> list[int]:
    """Processes (still) in the session ``session_id`` (field 6 of /proc/<pid>/stat)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == session_id:
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_and_exits_zero(
    fake_api: FakeApi,
    key_file: Path,
    models_dir: Path,
    digits: npt.NDArray[np.float32],
    workers: int,
) -> None:
    model = next(iter(load_models(models_dir)))
    fake_api.assignments = [make_assignment(model, {"input": digits[:4]}, job=1)]
    env = {**os.environ, "INFERLEDGER_WORKER_POLL_INTERVAL_S": "0.01"}
    command = [sys.executable, "-m", "worker", "run", "--api-url", fake_api.url]
    command += ["--key-file", str(key_file), "--models-dir", str(models_dir), "--json"]
    command += ["--workers", str(workers)]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its inference processes join this session
    )
    try:
        fake_api.wait_posted(1, timeout=60)
        os.killpg(process.pid, signal.SIGTERM)  # to the group, as a service manager does
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip().startswith("{")]
    events = [line.get("event") for line in lines]
    assert "start" in events and "stopping" in events and "winding_down" in events
    assert lines[-1]["event"] == "stop" and lines[-1]["done"] == 1
    assert lines[-1]["workers"] == workers
    assert [line for line in lines if line["level"] == "error"] == []
    deadline = time.monotonic() + 10  # none left behind (the resource tracker ends on EOF)
    while (left := _session_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], [_cmdline(pid) for pid in left]


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"
