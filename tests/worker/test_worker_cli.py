"""``inferledger worker`` commands: init, clear failures, and a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
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


def test_sigterm_finishes_and_exits_zero(
    fake_api: FakeApi, key_file: Path, models_dir: Path, digits: npt.NDArray[np.float32]
) -> None:
    model = next(iter(load_models(models_dir)))
    fake_api.assignments = [make_assignment(model, {"input": digits[:4]}, job=1)]
    env = {**os.environ, "INFERLEDGER_WORKER_POLL_INTERVAL_S": "0.01"}
    command = [sys.executable, "-m", "worker", "run", "--api-url", fake_api.url]
    command += ["--key-file", str(key_file), "--models-dir", str(models_dir), "--json"]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        fake_api.wait_posted(1, timeout=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    events = [line.get("event") for line in lines]
    assert "start" in events and "stopping" in events
    assert lines[-1]["event"] == "stop" and lines[-1]["done"] == 1
