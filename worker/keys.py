"""Key files: an encrypted V3 keystore, or a plaintext JSON file for dev only. The worker's
device key, and the keys of clients and contributors (``inferledger client key``,
``inferledger wallet``).

Key files are created with mode 0600 and never overwritten. Nothing here logs or puts the
private key into an error message.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from worker.errors import KeyFileError, WrongPassword

logger = logging.getLogger(__name__)

KEY_FILE_MODE = 0o600


def create_key_file(
    path: Path, password: str | None, *, kdf_iterations: int | None = None
) -> LocalAccount:
    """Create a fresh key at ``path``: a V3 keystore when ``password`` is given, else a
    plaintext dev key file. ``kdf_iterations`` overrides the keystore's scrypt cost (tests)."""
    return write_key_file(path, Account.create(), password, kdf_iterations=kdf_iterations)


def import_key_file(
    path: Path, private_key: str, password: str | None, *, kdf_iterations: int | None = None
) -> LocalAccount:
    """Store an existing private key (0x-hex) at ``path``, as ``create_key_file`` does."""
    try:
        account: LocalAccount = Account.from_key(private_key.strip())
    except Exception:  # eth_keys raises several types; never echo the key back
        raise KeyFileError(path, "the key to import is not a valid secp256k1 key") from None
    return write_key_file(path, account, password, kdf_iterations=kdf_iterations)


def write_key_file(
    path: Path, account: LocalAccount, password: str | None, *, kdf_iterations: int | None = None
) -> LocalAccount:
    payload: dict[str, Any]
    if password is None:
        payload = {"address": account.address, "private_key": "0x" + bytes(account.key).hex()}
    else:
        payload = Account.encrypt(account.key, password, iterations=kdf_iterations)
    _write_private(path, json.dumps(payload, indent=2) + "\n")
    logger.info("wrote key file %s for %s", path, account.address)
    return account


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(path, "already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot be created: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), KEY_FILE_MODE)
        handle.write(text)


def load_key(path: Path, password: str | None, *, allow_plaintext: bool = True) -> LocalAccount:
    """Load the account; ``allow_plaintext=False`` (prod) refuses dev key files."""
    data = _read_json(path)
    if _encrypted(data):
        return _load_keystore(path, data, password)
    if "private_key" in data:
        if not allow_plaintext:
            raise KeyFileError(
                path, "is a plaintext dev key; prod mode needs an encrypted keystore"
            )
        return _load_plaintext(path, data)
    raise KeyFileError(path, "is neither a V3 keystore nor a dev key file")


def is_keystore(path: Path) -> bool:
    """Whether ``path`` holds an encrypted V3 keystore (which needs a password to load)."""
    return _encrypted(_read_json(path))


def _encrypted(data: dict[str, Any]) -> bool:
    return "crypto" in data or "Crypto" in data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(path, "not found; create one first (see `inferledger --help`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(path, f"cannot be read: {exc}") from exc
    except ValueError:
        raise KeyFileError(path, "is not valid JSON") from None
    if not isinstance(data, dict):
        raise KeyFileError(path, "must hold a JSON object")
    return data


def _load_keystore(path: Path, data: dict[str, Any], password: str | None) -> LocalAccount:
    if password is None:
        raise KeyFileError(path, "is an encrypted keystore; a password is needed (--password-env)")
    try:
        key = Account.decrypt(data, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(path) from None
        raise KeyFileError(path, "is not a valid V3 keystore") from None
    except (KeyError, TypeError, AttributeError, NotImplementedError):
        raise KeyFileError(path, "is not a valid V3 keystore") from None
    account: LocalAccount = Account.from_key(key)
    _check_address(path, account, data.get("address"))
    return account


def _load_plaintext(path: Path, data: dict[str, Any]) -> LocalAccount:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("key file %s is readable by others (mode %o); chmod 600 it", path, mode)
    try:
        account: LocalAccount = Account.from_key(data["private_key"])
    except Exception:  # eth_keys raises several types; never echo the key back
        raise KeyFileError(path, "private_key is not a valid secp256k1 key") from None
    _check_address(path, account, data.get("address"))
    return account


def _check_address(path: Path, account: LocalAccount, declared: object) -> None:
    if declared is None:
        return
    if str(declared).lower().removeprefix("0x") != account.address.lower().removeprefix("0x"):
        raise KeyFileError(path, f"declares address {declared} but its key is {account.address}")
