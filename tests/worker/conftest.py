"""Fixtures for the worker's tests: a models dir, digits inputs, settings, a stand-in API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from tiny_model import build_tiny_model
from worker_fake_api import FakeApi

from protocol.errors import ManifestError
from protocol.manifest import load_manifest
from worker.config import WorkerSettings

REPO_MODEL = Path(__file__).resolve().parents[2] / "models" / "digits-cnn"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A private copy of models/digits-cnn, or a tiny model of the same shape when that is
    missing or does not match its manifest (it may be being rebuilt)."""
    root = tmp_path / "models"
    try:
        load_manifest(REPO_MODEL)
        shutil.copytree(REPO_MODEL, root / "digits-cnn", ignore=shutil.ignore_patterns("*.py"))
    except (ManifestError, OSError):
        shutil.rmtree(root, ignore_errors=True)
        build_tiny_model(root / "tiny-digits")
    return root


@pytest.fixture(scope="session")
def digits() -> npt.NDArray[np.float32]:
    """200 digits images scaled to [0, 1], float32, shape [200, 1, 8, 8]."""
    from sklearn.datasets import load_digits

    data = load_digits().data[:200] / 16.0
    return np.ascontiguousarray(data.astype(np.float32).reshape(-1, 1, 8, 8))


@pytest.fixture
def account() -> LocalAccount:
    created: LocalAccount = Account.create()
    return created


@pytest.fixture
def key_file(tmp_path: Path, account: LocalAccount) -> Path:
    path = tmp_path / "worker-key.json"
    path.write_text(json.dumps({"address": account.address, "private_key": account.key.hex()}))
    path.chmod(0o600)
    return path


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi().start()
    yield api
    api.stop()


@pytest.fixture
def settings(fake_api: FakeApi, key_file: Path, models_dir: Path) -> WorkerSettings:
    return WorkerSettings(
        api_url=fake_api.url,
        key_file=key_file,
        models_dir=models_dir,
        poll_interval_s=0.01,
        max_idle_sleep_s=0.02,
        backoff_initial_s=0.01,
        max_backoff_s=0.05,
        request_timeout_s=5,
        shutdown_grace_s=2,
        workers=1,
    )
