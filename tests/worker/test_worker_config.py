"""Worker settings from flags, the environment, a TOML file and the defaults, in that order;
refusals that name the setting and where its value came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli import app
from worker.config import load_settings, usable_cpus
from worker.errors import ConfigError

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("INFERLEDGER_WORKER_"):
            monkeypatch.delenv(name)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return path


def test_config_flags_win_over_env_over_file_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _file(
        tmp_path,
        'api-url = "http://file:1"\nthreads = 3\npull_batch = 5\nkey_file = "keys/k.json"\n',
    )
    monkeypatch.setenv("INFERLEDGER_WORKER_THREADS", "2")
    monkeypatch.setenv("INFERLEDGER_WORKER_SUBMIT_BATCH", "7")
    settings = load_settings({"config": config, "pull_batch": 9, "name": None})
    assert settings.pull_batch == 9  # flag over file
    assert settings.threads == 2  # environment over file
    assert settings.submit_batch == 7  # environment over default
    assert settings.api_url == "http://file:1"  # file over default
    assert settings.key_file == tmp_path / "keys" / "k.json"  # relative to the file
    assert settings.name == "" and settings.workers == "auto"  # defaults


def test_config_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERLEDGER_WORKER_CONFIG", str(_file(tmp_path, "workers = 3\n")))
    settings = load_settings({"key_file": "k"})
    assert settings.workers == 3 and settings.pool_size() == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("thread = 2\n", "'thread' is not a setting (did you mean 'threads'?)"),
        ("colour = 'blue'\n", "'colour' is not a setting"),
        ("[worker]\nthreads = 2\n", "'worker' is not a setting"),
        ("threads = 2\nthreads = 3\n", "is not valid TOML"),
        ("pull-batch = 2\npull_batch = 3\n", "'pull_batch' is given twice"),
        ("threads = \n", "is not valid TOML"),
    ],
)
def test_config_file_refusals_name_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"config": path, "key_file": "k"})
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_config_file_missing_or_too_large(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings({"config": tmp_path / "absent.toml", "key_file": "k"})
    with pytest.raises(ConfigError, match="over 65536 bytes"):
        load_settings({"config": _file(tmp_path, "#" * 70_000), "key_file": "k"})


def test_config_bad_values_say_where_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _file(tmp_path, 'threads = 0\nworkers = "many"\nkey_file = "k"\n')
    monkeypatch.setenv("INFERLEDGER_WORKER_PULL_BATCH", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings({"config": config, "submit_batch": 0})
    text = str(caught.value)
    assert f"threads: Input should be greater than or equal to 1 (from {config})" in text
    either = "a valid integer, unable to parse string as an integer or Input should be 'auto'"
    assert f"workers: Input should be {either} (from {config})" in text
    assert "pull_batch: Input should be greater than or equal to 1 (from " in text
    assert "INFERLEDGER_WORKER_PULL_BATCH)" in text
    assert "submit_batch: Input should be greater than or equal to 1 (from --submit-batch)" in text
    monkeypatch.delenv("INFERLEDGER_WORKER_PULL_BATCH")
    with pytest.raises(ConfigError, match="key_file is required: --key-file"):
        load_settings({})
    with pytest.raises(ConfigError, match="workers must be auto or from 1 to 1024"):
        load_settings({"key_file": "k", "workers": 0})


def test_config_auto_sizes_the_pool_to_the_device() -> None:
    settings = load_settings({"key_file": "k", "threads": 1})
    assert settings.pool_size() == usable_cpus()
    assert settings.held_limit() == max(2 * settings.pull_batch, 4 * usable_cpus())
    two = load_settings({"key_file": "k", "threads": 2 * usable_cpus()})
    assert two.pool_size() == 1  # never none
    fixed = load_settings({"key_file": "k", "workers": "3", "max_held": 5})
    assert (fixed.pool_size(), fixed.held_limit()) == (3, 5)


def test_cli_run_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    config = _file(tmp_path, "key_file = 'k.json'\nshutdown-grace = 3\n")
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "'shutdown-grace' is not a setting (did you mean 'shutdown_grace_s'?)" in result.output
    result = runner.invoke(app, ["run", "--key-file", "k.json", "--threads", "0"])
    assert result.exit_code == 2 and "(from --threads)" in result.output
    result = runner.invoke(app, ["run", "--key-file", "k.json", "--workers", "lots"])
    assert result.exit_code == 2 and "workers:" in result.output


def test_cli_run_help_lists_every_setting() -> None:
    from worker.config import WorkerSettings

    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in WorkerSettings.model_fields:
        assert f"INFERLEDGER_WORKER_{name.upper()}" in result.output, name
    assert "--config" in result.output and "--workers" in result.output
