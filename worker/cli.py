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
from pydantic import ValidationError
from rich.console import Console

from worker.agent import Agent
from worker.api_client import ApiClient
from worker.config import WorkerSettings
from worker.display import live_status
from worker.errors import AuthRefused, KeyFileError, ModelStoreError
from worker.inference import ModelStore
from worker.keys import create_key_file, load_key
from worker.logs import configure_logging
from worker.signals import install_stop_handlers

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


def _settings(**overrides: Any) -> WorkerSettings:
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return WorkerSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        _fail(f"invalid settings ({problems}); flags or INFERLEDGER_WORKER_* variables", EXIT_USAGE)


INIT_HELP = (
    "Create a new device key and print the worker's address.\n\n"
    "With --password-env the key is an encrypted V3 keystore; without it, a plaintext JSON "
    "key file (mode 0600) for development only, which prod mode refuses to load."
)
RUN_HELP = (
    "Pull jobs, run them, sign attestations and submit results until SIGTERM or SIGINT.\n\n"
    "Every flag can also be set as INFERLEDGER_WORKER_<NAME> (for instance "
    "INFERLEDGER_WORKER_KEY_FILE); flags win. On the first SIGTERM or SIGINT the jobs held "
    "are finished and submitted, then the worker exits 0; a second one stops it at once."
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


@app.command(help=RUN_HELP)
def run(
    api_url: Annotated[str | None, typer.Option("--api-url", help="Base URL of the API.")] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Key file made by `init`.")
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Directory of <model>/manifest.json.")
    ] = None,
    opt_level: Annotated[
        OptLevelChoice | None,
        typer.Option("--opt-level", help="onnxruntime graph optimisation level."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="onnxruntime intra-op threads.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label for logs.")] = None,
    json_logs: Annotated[
        bool, typer.Option("--json", help="JSON log lines on stderr (for services).")
    ] = False,
    password_env: PasswordEnv = None,
) -> None:
    settings = _settings(
        api_url=api_url,
        key_file=key_file,
        models_dir=models_dir,
        opt_level=opt_level,
        name=name,
        json_logs=True if json_logs else None,
    )
    console = Console(stderr=True)
    configure_logging(json_logs=settings.json_logs, console=console)
    account, store = _load(settings, _password(password_env))
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


def main() -> None:
    app()
