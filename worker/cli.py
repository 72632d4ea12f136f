"""``inferledger worker``: create a device key, and run the worker agent."""

from __future__ import annotations

import logging
import os
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console

from protocol import recursion
from worker.agent import Agent
from worker.api_client import ApiClient
from worker.config import ENV_PREFIX, WorkerSettings, load_settings
from worker.display import live_status
from worker.errors import AuthRefused, ConfigError, KeyFileError, ModelStoreError, PoolFailed
from worker.inference import ModelStore
from worker.keys import create_key_file, load_key
from worker.logs import configure_logging
from worker.signals import install_stop_handlers

recursion.bound()  # py_ecc raised it: an API's nested JSON must not crash the agent

logger = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="worker",
    help="Run inference jobs on this device and attest to the results.",
    no_args_is_help=True,
    add_completion=False,
)

PasswordEnv = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        metavar="NAME",
        help="Name of an environment variable holding the keystore password "
        "(never pass the password itself on the command line).",
    ),
]


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _password(password_env: str | None) -> str | None:
    if password_env is None:
        return None
    value = os.environ.get(password_env)
    if value is None:
        _fail(f"--password-env {password_env}: no such environment variable", EXIT_USAGE)
    return value


def _settings(**flags: Any) -> WorkerSettings:
    try:
        return load_settings(flags)
    except ConfigError as exc:
        _fail(exc.detail if exc.path is None else str(exc), EXIT_USAGE)


def _settings_help() -> str:
    """Every setting: its name (flag, variable, file), default and meaning."""
    lines = []
    for name, info in WorkerSettings.model_fields.items():
        default = "required" if info.is_required() else str(info.default).lower()
        lines.append(f"{name} ({ENV_PREFIX}{name.upper()}; default {default}): {info.description}")
    return "\n\n".join(lines)


INIT_HELP = (
    "Create a new device key and print the worker's address.\n\n"
    "With --password-env the key is an encrypted V3 keystore; without it, a plaintext JSON "
    "key file (mode 0600) for development only, which prod mode refuses to load."
)
RUN_HELP = (
    "Pull jobs, run them, sign attestations and submit results until SIGTERM or SIGINT.\n\n"
    "Settings come from flags, then INFERLEDGER_WORKER_<NAME> environment variables, then a "
    "TOML file (--config, or INFERLEDGER_WORKER_CONFIG) holding `name = value` lines, then the "
    "defaults: the first that gives one wins. An unknown name or a bad value stops the worker "
    "before it starts. On the first SIGTERM or SIGINT, jobs not started are handed back, "
    "running ones finish, results are submitted within the shutdown grace, and the worker "
    "exits 0; a second one stops it at once.\n\n"
    "Every setting:\n\n"
)


class OptLevelChoice(StrEnum):
    all = "all"
    disabled = "disabled"


@app.command(help=INIT_HELP)
def init(
    key_file: Annotated[
        Path, typer.Option("--key-file", help="Where to write the new key (never overwritten).")
    ],
    password_env: PasswordEnv = None,
) -> None:
    password = _password(password_env)
    if password is None and os.environ.get("INFERLEDGER_WORKER_MODE", "dev") == "prod":
        _fail("prod mode needs an encrypted keystore: pass --password-env NAME", EXIT_USAGE)
    try:
        account = create_key_file(key_file, password)
    except KeyFileError as exc:
        _fail(exc.detail)
    kind = "encrypted keystore" if password is not None else "plaintext dev key (mode 0600)"
    typer.echo(f"created {kind} {key_file}", err=True)
    typer.echo(account.address)


@app.command(help=RUN_HELP + _settings_help())
def run(
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file of settings (see below).")
    ] = None,
    api_url: Annotated[str | None, typer.Option("--api-url", help="Base URL of the API.")] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Key file made by `init`.")
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Directory of <model>/manifest.json.")
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option("--workers", help="Inference processes: a number, or auto (CPUs / threads)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="onnxruntime intra-op threads per process.")
    ] = None,
    opt_level: Annotated[
        OptLevelChoice | None,
        typer.Option("--opt-level", help="onnxruntime graph optimisation level."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label for logs.")] = None,
    json_logs: Annotated[
        bool, typer.Option("--json", help="JSON log lines on stderr (for services).")
    ] = False,
    password_env: PasswordEnv = None,
) -> None:
    settings = _settings(
        config=config,
        api_url=api_url,
        key_file=key_file,
        models_dir=models_dir,
        workers=workers,
        threads=threads,
        opt_level=opt_level.value if opt_level is not None else None,
        name=name,
        json_logs=True if json_logs else None,
        password_env=password_env,
    )
    console = Console(stderr=True)
    configure_logging(json_logs=settings.json_logs, console=console)
    account, store = _load(settings, _password(settings.password_env))
    stop = threading.Event()
    restore = install_stop_handlers(stop)
    try:
        _run_agent(settings, account, store, stop, console)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        restore()


def _load(settings: WorkerSettings, password: str | None) -> tuple[LocalAccount, ModelStore]:
    try:
        account = load_key(settings.key_file, password, allow_plaintext=settings.mode == "dev")
        store = ModelStore(
            settings.models_dir, opt_level=settings.opt_level, threads=settings.threads
        )
    except (KeyFileError, ModelStoreError) as exc:
        _fail(exc.detail)
    return account, store


def _run_agent(
    settings: WorkerSettings,
    account: LocalAccount,
    store: ModelStore,
    stop: threading.Event,
    console: Console,
) -> None:
    live = console.is_terminal and not settings.json_logs
    label = settings.name or account.address[:10]
    with ApiClient(settings, account) as client:
        agent = Agent(settings, account, store, client)
        with live_status(console, agent.stats, label=label, enabled=live):
            try:
                agent.run(stop)
            except AuthRefused as exc:
                _fail(f"the API refused this worker ({account.address}): {exc.detail}")
            except PoolFailed as exc:
                _fail(exc.detail)


def main() -> None:
    app()
