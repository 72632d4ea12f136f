"""Settings: the well-known Hardhat keys are refused outside dev mode, and the settler key
never shows in a repr or a log line."""

from __future__ import annotations

import logging

import pytest
from eth_account import Account
from pydantic import ValidationError

from inferledger.demo import dev_keys
from ledger.config import Settings, hardhat_dev_keys, is_dev_key


def test_config_dev_keys_are_the_hardhat_accounts() -> None:
    assert len(hardhat_dev_keys()) == 20
    assert Account.from_key(dev_keys(1)[0]).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert is_dev_key(dev_keys(3)[2]) and is_dev_key(dev_keys(3)[2].upper().replace("0X", "0x"))
    assert not is_dev_key("0x" + bytes(Account.create().key).hex())


def test_config_prod_refuses_a_hardhat_settler_key() -> None:
    for key in dev_keys(3):
        with pytest.raises(ValidationError, match="well-known Hardhat key"):
            Settings(mode="prod", settler_key=key)
        assert Settings(mode="dev", settler_key=key).settler_key is not None


def test_config_prod_accepts_a_fresh_key_and_hides_it(caplog: pytest.LogCaptureFixture) -> None:
    key = "0x" + bytes(Account.create().key).hex()
    settings = Settings(mode="prod", settler_key=key)
    assert settings.settler_key is not None and settings.settler_key.get_secret_value() == key
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    assert key not in caplog.text and key[2:] not in caplog.text
    assert key not in repr(settings) and key not in str(settings.model_dump())


def test_config_replica_limits_are_checked() -> None:
    with pytest.raises(ValidationError, match="max_replicas"):
        Settings(replicas=3, max_replicas=2)


def test_config_database_url_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@db/x")
    assert Settings().db_url == "postgresql+psycopg://u@db/x"
    monkeypatch.setenv("INFERLEDGER_DATABASE_URL", "sqlite:///prefixed.db")
    assert Settings().db_url == "sqlite:///prefixed.db"  # the prefixed name wins
    assert Settings(database_url="sqlite:///given.db").db_url == "sqlite:///given.db"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("INFERLEDGER_DATABASE_URL")
    assert Settings().db_url.startswith("sqlite:///") and Settings().db_url.endswith("ledger.db")


def test_config_prod_refuses_trust_that_is_never_checked_again() -> None:
    with pytest.raises(ValidationError, match="never checks a trusted worker again"):
        Settings(mode="prod", trust_after=10, spot_check_bps=0)
    assert Settings(mode="prod", trust_after=10, spot_check_bps=1).spot_check_bps == 1
    assert Settings(mode="prod", trust_after=0, spot_check_bps=0).trust_after == 0  # off
    assert Settings(mode="dev", trust_after=10, spot_check_bps=0).spot_check_bps == 0
    for bad in ({"trust_after": -1}, {"spot_check_bps": 10_001}, {"spot_check_bps": -1}):
        with pytest.raises(ValidationError):
            Settings(**bad)
