"""tests/exit_guard.py: a pytest run over tests that leave a blocked non-daemon thread and a
blocked ``multiprocessing`` child ends at once, names them, and keeps the session's status.
Without the guard such a run never ends (Python's exit joins both)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).resolve().parents[1]  # tests/, where exit_guard.py lives

LEAKY = """
import multiprocessing
import threading
import time


def _forever():
    time.sleep(3600)


def test_leaks_a_thread_and_a_process():
    threading.Thread(target=threading.Event().wait, name="stuck-thread").start()
    multiprocessing.get_context("spawn").Process(target=_forever, name="stuck-child").start()
    assert {FAIL} == 0
"""


def _run(tmp_path: Path, fail: int) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "test_leaky.py").write_text(LEAKY.replace("{FAIL}", str(fail)))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "exit_guard"]
    argv += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "test_leaky.py"]
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    start = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=tmp_path,
        env={"PYTHONPATH": str(GUARD_DIR), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - start


@pytest.mark.parametrize(("fail", "status"), [(0, 0), (1, 1)])
def test_a_run_that_leaks_ends_with_its_own_status(tmp_path: Path, fail: int, status: int) -> None:
    done, took = _run(tmp_path, fail)
    assert done.returncode == status, done.stdout + done.stderr
    assert took < 60
    assert "exit_guard: the tests left running" in done.stderr
    assert "'stuck-thread'" in done.stderr and "'stuck-child'" in done.stderr
    assert "Current thread" in done.stderr  # faulthandler's dump of every thread's stack
