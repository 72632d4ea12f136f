"""Device key files: encrypted keystores and plaintext dev keys."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from worker.errors import KeyFileError, WrongPassword
from worker.keys import create_key_file, load_key

FAST_KDF = 2**10  # scrypt cost for tests; real keys use eth_account's default


def test_keystore_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    created = create_key_file(path, "correct horse", kdf_iterations=FAST_KDF)
    data = json.loads(path.read_text())
    assert data["crypto"]["kdf"] == "scrypt"
    assert created.key.hex() not in path.read_text()
    loaded = load_key(path, "correct horse", allow_plaintext=False)
    assert loaded.address == created.address
    assert loaded.key == created.key


def test_keystore_wrong_or_missing_password(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    create_key_file(path, "correct horse", kdf_iterations=FAST_KDF)
    with pytest.raises(WrongPassword) as caught:
        load_key(path, "battery staple")
    assert caught.value.path == path
    with pytest.raises(KeyFileError, match="password is needed"):
        load_key(path, None)


def test_dev_key_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "key.json"
    created = create_key_file(path, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["address"] == created.address
    loaded = load_key(path, None)
    assert loaded.address == created.address


def test_dev_key_refused_in_prod(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    create_key_file(path, None)
    with pytest.raises(KeyFileError, match="prod mode"):
        load_key(path, None, allow_plaintext=False)


def test_key_files_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    first = create_key_file(path, None)
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(path, None)
    assert load_key(path, None).address == first.address


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"hello": 1}', "neither"),
        ('{"private_key": "0x1234"}', "not a valid secp256k1 key"),
        (
            '{"address": "0x0000000000000000000000000000000000000001", "private_key": "0x'
            + "11" * 32
            + '"}',
            "declares address",
        ),
    ],
)
def test_bad_key_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message) as caught:
        load_key(path, None)
    assert "11" * 32 not in str(caught.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_key(tmp_path / "absent.json", None)
