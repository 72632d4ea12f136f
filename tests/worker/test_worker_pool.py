"""The inference pool: processes started at once, each computing bit for bit what the agent's
own runner computes (the fingerprint promises it), refused when a runner cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from eth_account import Account
from worker_fake_api import CHAIN, make_assignment

from protocol.contracts import Deployment
from protocol.manifest import load_models
from worker.agent import chunks
from worker.errors import PoolFailed
from worker.inference import ModelStore
from worker.pool import Pool
from worker.runner import Done, JobRunner, RunnerSpec, Skipped

DOMAIN = Deployment.from_dict({**CHAIN, "block": 0}).registry_domain


def _spec(models_dir: Path, **changes: Any) -> RunnerSpec:
    """A spec for the models in ``models_dir`` (``changes`` may spoil it)."""
    store = ModelStore(models_dir)
    values: dict[str, Any] = {
        "models_dir": models_dir,
        "opt_level": "all",
        "threads": 1,
        "key": bytes(Account.create().key),
        "domain": DOMAIN,
        "fingerprint": store.fingerprint(),
        "max_tensor_bytes": 1 << 20,
        "max_inputs": 16,
    }
    return RunnerSpec(**{**values, **changes})


def test_pool_processes_agree_bit_for_bit_with_the_agents_runner(
    models_dir: Path, digits: npt.NDArray[np.float32]
) -> None:
    spec = _spec(models_dir)
    model = next(iter(load_models(models_dir)))
    raws = [make_assignment(model, {"input": digits[i : i + 1 + i % 3]}, job=i) for i in range(40)]
    raws.insert(7, {**raws[7], "input_hash": raws[8]["input_hash"]})  # one bad job among them
    pool = Pool(spec, 2)
    try:
        pids = pool.pids()
        assert len(pids) == 2 and os.getpid() not in pids  # started at once, not on demand
        futures = [pool.submit(chunk) for chunk in chunks(raws, pool.size)]
        in_pool = [outcome for f in futures for outcome in f.result(timeout=60)]
    finally:
        pool.close(kill=False)
    local = JobRunner(spec).run_chunk(raws)
    assert [type(o) for o in in_pool] == [type(o) for o in local]
    assert isinstance(in_pool[7], Skipped) and in_pool[7].code == "input_hash_mismatch"
    done = [(a, b) for a, b in zip(in_pool, local, strict=True) if isinstance(a, Done)]
    assert len(done) == 40
    for a, b in done:  # outputs, result hash and (RFC 6979) signature: identical bytes
        assert isinstance(b, Done) and a.result == b.result


def test_pool_refuses_a_runner_that_cannot_be_built(models_dir: Path) -> None:
    other = ModelStore(models_dir, threads=2).fingerprint()  # not what the processes run
    started = time.monotonic()
    with pytest.raises(PoolFailed, match="did not start"):
        Pool(_spec(models_dir, fingerprint=other), 2)
    assert time.monotonic() - started < 60
    with pytest.raises(PoolFailed):
        Pool(replace(_spec(models_dir), models_dir=models_dir / "absent"), 2)


def test_pool_close_with_kill_ends_its_processes(models_dir: Path) -> None:
    pool = Pool(_spec(models_dir), 2)
    pids = pool.pids()
    pool.close(kill=True)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; its parent has not reaped it yet


_HOLDER = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_worker_pool import _spec
from worker.pool import Pool
pool = Pool(_spec(Path({models!r})), 2)
print(" ".join(map(str, pool.pids())), flush=True)
if {broken!r}:  # one process dies; the interpreter then exits without closing the pool
    os.kill(pool.pids()[0], signal.SIGKILL)
    time.sleep(1)
else:
    time.sleep(600)
"""


def _holder(models_dir: Path, broken: bool) -> subprocess.Popen[str]:
    code = _HOLDER.format(tests=str(Path(__file__).parent), models=str(models_dir), broken=broken)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{p}").exists() for p in pids)


def test_pool_with_a_dead_process_lets_the_agent_exit(models_dir: Path) -> None:
    """The executor shuts a broken pool down with SIGTERM and waits: the processes must
    heed it (they once ignored it, and the agent hung at exit)."""
    holder = _holder(models_dir, broken=True)
    assert holder.stdout is not None
    pids = [int(p) for p in holder.stdout.readline().split()]
    try:
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    deadline = time.monotonic() + 15
    while not _gone(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pids)


def test_pool_processes_die_with_a_killed_agent(models_dir: Path) -> None:
    holder = _holder(models_dir, broken=False)
    assert holder.stdout is not None
    pids = [int(p) for p in holder.stdout.readline().split()]
    assert len(pids) == 2
    holder.kill()  # SIGKILL: the agent runs no clean-up
    holder.wait()
    deadline = time.monotonic() + 15
    while not _gone(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pids)
