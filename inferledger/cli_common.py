"""What the ``client`` and ``wallet`` commands share: the options that find the API, the
chain and the key file; key files (V3 keystores, passwords from an environment variable or
a prompt, never echoed); and one error boundary that turns every refusal into one line on
stderr and a non-zero exit status.

Exit status: 0 done; 1 refused (by the API, with its error code, or by the chain, with the
contract's error name) or unreachable; 2 bad usage (an amount, a key file, a password);
3 the job timed out on the caller's clock or failed (nothing was charged for it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from requests.exceptions import ConnectionError as RpcConnectionError
from rich.console import Console

from inferledger.amounts import parse_tokens
from inferledger.client import InferenceClient, raise_for
from inferledger.errors import AmountError, ApiError, ClientError, JobFailed, JobTimeout
from ledger.chain.client import ChainClient, connect
from ledger.config import REPO_ROOT
from ledger.errors import ChainError
from protocol.contracts import Deployment
from worker.errors import KeyFileError, WrongPassword
from worker.keys import import_key_file, is_keystore, load_key, write_key_file

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_JOB = 3
ARTIFACTS_DIR = REPO_ROOT / "artifacts"

console = Console()

ApiUrl = Annotated[
    str, typer.Option("--api-url", envvar="INFERLEDGER_API_URL", help="Base URL of the API.")
]
RpcUrl = Annotated[
    str, typer.Option("--rpc-url", envvar="INFERLEDGER_RPC_URL", help="JSON-RPC of the chain.")
]
DeploymentFile = Annotated[
    Path | None,
    typer.Option(
        "--deployment-file",
        envvar="INFERLEDGER_DEPLOYMENT_FILE",
        help="Contract addresses (JSON); default: ask the API (GET /v1/chain).",
    ),
]
PasswordEnv = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        metavar="NAME",
        help="Name of an environment variable holding the keystore password; "
        "without it the password is prompted for (never pass it on the command line).",
    ),
]
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_RPC_URL = "http://127.0.0.1:8545"


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def tokens_arg(text: str) -> int:
    """A token amount argument (``1.5``) in wei, or a usage error."""
    try:
        return parse_tokens(text)
    except AmountError as exc:
        fail(f"amount {exc}", EXIT_USAGE)


@contextmanager
def errors_as_exit() -> Iterator[None]:
    """Every expected failure as one line on stderr and an exit status; no traceback."""
    try:
        yield
    except ApiError as exc:
        fail(f"{exc.code}: {exc.detail} (HTTP {exc.status})")
    except (JobTimeout, JobFailed) as exc:
        fail(str(exc), EXIT_JOB)
    except ClientError as exc:
        fail(str(exc))
    except ChainError as exc:
        fail(f"{exc.name or 'chain_error'}: {exc.detail}")
    except WrongPassword:
        fail("wrong password for the keystore", EXIT_USAGE)
    except KeyFileError as exc:
        fail(str(exc), EXIT_USAGE)
    except httpx.TransportError as exc:
        fail(f"cannot reach the API: {exc}")
    except RpcConnectionError:
        fail("cannot reach the chain's JSON-RPC (--rpc-url)")


# -- key files -------------------------------------------------------------------------
def password_for(password_env: str | None, *, new: bool) -> str:
    if password_env is not None:
        value = os.environ.get(password_env)
        if value is None:
            fail(f"--password-env {password_env}: no such environment variable", EXIT_USAGE)
        return value
    return str(typer.prompt("Keystore password", hide_input=True, confirmation_prompt=new))


def secret_from(key_env: str | None) -> str:
    """A private key to import: from the environment variable ``key_env``, or a prompt."""
    if key_env is None:
        return str(typer.prompt("Private key (0x-hex)", hide_input=True))
    secret = os.environ.get(key_env)
    if secret is None:
        fail(f"--key-env {key_env}: no such environment variable", EXIT_USAGE)
    return secret


def new_key_file(
    path: Path, password_env: str | None, *, plaintext: bool, secret: str | None = None
) -> LocalAccount:
    """Store a fresh key, or ``secret``, at ``path`` (never overwritten): a V3 keystore, or
    with ``plaintext`` a dev key file (mode 0600)."""
    if path.exists():
        fail(f"{path} already exists; refusing to overwrite a key", EXIT_USAGE)
    password = None if plaintext else password_for(password_env, new=True)
    with errors_as_exit():
        if secret is not None:
            return import_key_file(path, secret, password)
        return write_key_file(path, Account.create(), password)
    raise AssertionError("unreachable")  # pragma: no cover


def load_account(path: Path, password_env: str | None) -> LocalAccount:
    with errors_as_exit():
        password = password_for(password_env, new=False) if is_keystore(path) else None
        return load_key(path, password)
    raise AssertionError("unreachable")  # pragma: no cover


# -- the API and the chain --------------------------------------------------------------
def deployment_of(deployment_file: Path | None, api_url: str) -> Deployment:
    if deployment_file is not None:
        if not deployment_file.exists():
            fail(f"--deployment-file {deployment_file} not found", EXIT_USAGE)
        return Deployment.load(deployment_file)
    with errors_as_exit(), httpx.Client(base_url=api_url, timeout=30) as http:
        return Deployment.from_dict({**raise_for(http.get("/v1/chain")), "block": 0})
    raise AssertionError("unreachable")  # pragma: no cover


def chain_client(
    rpc_url: str, deployment: Deployment, account: LocalAccount | None = None
) -> ChainClient:
    key = "0x" + bytes(account.key).hex() if account is not None else None
    return ChainClient(connect(rpc_url), deployment, ARTIFACTS_DIR, key)


def api_client(api_url: str, account: LocalAccount, timeout_s: float = 30.0) -> InferenceClient:
    return InferenceClient(api_url, bytes(account.key), timeout_s=timeout_s)


def when(unix_s: int) -> str:
    """A chain timestamp in local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(unix_s)))


def tokens_received(chain: ChainClient, action: Callable[[ChainClient], None]) -> int:
    """Run ``action`` (a withdrawal or claim); the tokens it brought to the key's wallet."""
    with errors_as_exit():
        balance_of = chain.token.functions.balanceOf(chain.address)
        before = int(chain.call(balance_of))
        action(chain)
        return int(chain.call(balance_of)) - before
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Target:
    """Where a command acts: the key file, the API, the chain (the group's options)."""

    key_file: Path
    password_env: str | None
    api_url: str
    rpc_url: str
    deployment_file: Path | None

    def account(self) -> LocalAccount:
        return load_account(self.key_file, self.password_env)

    def chain(self, *, signed: bool = True) -> ChainClient:
        """A chain client, signing with the key file's key unless ``signed`` is False."""
        account = self.account() if signed else None
        return chain_client(
            self.rpc_url, deployment_of(self.deployment_file, self.api_url), account
        )

    def client(self, timeout_s: float = 30.0) -> InferenceClient:
        return api_client(self.api_url, self.account(), timeout_s)


def target(ctx: typer.Context) -> Target:
    found = ctx.find_object(Target)
    if found is None:  # pragma: no cover - the group's callback always sets it
        raise RuntimeError("no Target in the command's context")
    return found


def add_target_options(app: typer.Typer, *, key_envvar: str, default_key_file: Path) -> None:
    """The group's options, given before the command (or as environment variables)."""

    key_file_option = typer.Option(
        default_key_file, "--key-file", envvar=key_envvar, help="The key file."
    )

    @app.callback()
    def options(
        ctx: typer.Context,
        key_file: Path = key_file_option,
        password_env: PasswordEnv = None,
        api_url: ApiUrl = DEFAULT_API_URL,
        rpc_url: RpcUrl = DEFAULT_RPC_URL,
        deployment_file: DeploymentFile = None,
    ) -> None:
        ctx.obj = Target(key_file, password_env, api_url, rpc_url, deployment_file)


Plaintext = Annotated[
    bool,
    typer.Option(
        "--plaintext", help="Write a plaintext dev key file (mode 0600) instead of a keystore."
    ),
]
KeyEnv = Annotated[
    str | None,
    typer.Option(
        "--key-env",
        metavar="NAME",
        help="Environment variable holding the private key (0x-hex); default: a prompt.",
    ),
]


def add_key_commands(app: typer.Typer) -> None:
    """``new`` and ``import`` on ``app``, writing to the group's ``--key-file``."""

    @app.command("new")
    def key_new(ctx: typer.Context, plaintext: Plaintext = False) -> None:
        """Create a new key file and print its address (never overwrites a file)."""
        where = target(ctx)
        account = new_key_file(where.key_file, where.password_env, plaintext=plaintext)
        typer.echo(f"created {where.key_file}", err=True)
        typer.echo(account.address)

    @app.command("import")
    def key_import(
        ctx: typer.Context, key_env: KeyEnv = None, plaintext: Plaintext = False
    ) -> None:
        """Store an existing private key in a key file and print its address."""
        where, secret = target(ctx), secret_from(key_env)
        account = new_key_file(
            where.key_file, where.password_env, plaintext=plaintext, secret=secret
        )
        typer.echo(f"imported into {where.key_file}", err=True)
        typer.echo(account.address)
