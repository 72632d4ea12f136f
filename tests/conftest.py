"""Shared fixtures over real parts: a Hardhat node with the contracts deployed, SQLite and
PostgreSQL databases, Redis. Nothing here is a mock; a part that is missing fails loudly
(set INFERLEDGER_TEST_SKIP_MISSING=1 to skip instead, e.g. on a laptop without PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from exit_guard import pytest_sessionfinish, pytest_unconfigure  # noqa: F401 (hooks)
from web3 import Web3

from inferledger.demo import dev_keys
from inferledger.procs import Processes, free_port, start_hardhat_node
from ledger.chain.client import ChainClient, connect
from ledger.chain.deploy import deploy
from ledger.config import REPO_ROOT
from protocol.contracts import Deployment

TOKEN = 10**18
PG_ADMIN_URL = os.environ.get("INFERLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("INFERLEDGER_TEST_REDIS", "redis://127.0.0.1:6379/0")
ARTIFACTS = REPO_ROOT / "artifacts"


def _missing(what: str) -> None:
    if os.environ.get("INFERLEDGER_TEST_SKIP_MISSING") == "1":
        pytest.skip(f"{what} is not available")
    pytest.fail(f"{what} is not available; the tests need it (see README: Testing)")


@dataclass
class Chain:
    w3: Web3
    rpc_url: str
    deployment: Deployment
    keys: list[str]  # 0 admin/settler, 1 client, 2 treasury, 3.. contributors

    def actor(self, index: int) -> ChainClient:
        return ChainClient(self.w3, self.deployment, ARTIFACTS, self.keys[index])


@pytest.fixture(scope="session")
def hardhat_rpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (ARTIFACTS / "contracts").exists():
        pytest.fail("contracts are not compiled: run `make contracts` (make test does)")
    port = free_port()
    with Processes(tmp_path_factory.mktemp("hardhat-logs")) as procs:
        yield start_hardhat_node(procs, port, REPO_ROOT)


@pytest.fixture(scope="session")
def chain(hardhat_rpc: str) -> Chain:
    """The four contracts deployed once per session on a real Hardhat node."""
    w3 = connect(hardhat_rpc)
    keys = dev_keys(10)
    treasury = w3.eth.account.from_key(keys[2]).address
    deployment, _ = deploy(
        w3, ARTIFACTS, keys[0], treasury=treasury, min_stake_wei=50 * TOKEN, challenge_window_s=2
    )
    return Chain(w3, hardhat_rpc, deployment, keys)


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error:
        _missing(f"PostgreSQL at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"il_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0].split("://", 1)[1]
    yield f"postgresql+psycopg://{base}/{name}"
    from ledger.db import engine_for

    engine_for.cache_clear()  # engines are cached per URL; DROP ... FORCE closes their sessions
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        _missing(f"Redis at {REDIS_URL}")
    return REDIS_URL
