"""``inferledger client`` and ``inferledger wallet`` against the real API over HTTP and the
Hardhat node: a client imports a key, deposits with a permit, runs and submits jobs and sees
its balance; a contributor stakes, registers a device, lists its devices, sees its earnings
move from pending to a posted epoch to claimable, claims, unbonds. Refusals exit non-zero
with one line naming the API's code or the contract's error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_harness import TOKEN, ApiEnv, answering, samples, served
from eth_account import Account
from typer.testing import CliRunner, Result

from inferledger.amounts import format_tokens
from inferledger.cli import app
from inferledger.demo import dev_keys, wait_claimable
from inferledger.wallet import earnings_of
from ledger.epochs import close_epoch
from protocol.contracts import EpochRecord
from worker.keys import create_key_file, load_key

runner = CliRunner()
KEY_FILE_ENV = {"client": "INFERLEDGER_CLIENT_KEY_FILE", "wallet": "INFERLEDGER_WALLET_KEY_FILE"}


@pytest.fixture(scope="module")
def cli_env(env: ApiEnv) -> Iterator[dict[str, str]]:
    env.sign_in_all()
    with served(env.http.app) as url:
        yield {
            "INFERLEDGER_API_URL": url,
            "INFERLEDGER_RPC_URL": env.ctx.settings.rpc_url,
            "COLUMNS": "240",
        }


def cli(cli_env: dict[str, str], *args: str, code: int = 0, **env: str) -> Result:
    result = runner.invoke(app, list(args), env={**cli_env, **env})
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def _import(cli_env: dict[str, str], group: list[str], key_file: Path, key: str) -> str:
    out = cli(
        cli_env,
        *group,
        "import",
        "--key-env",
        "THE_KEY",
        "--plaintext",
        THE_KEY=key,
        **{KEY_FILE_ENV[group[0]]: str(key_file)},
    )
    return out.stdout.strip()


def test_client_key_new_writes_a_keystore_and_never_shows_the_password(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "client.json"
    pw = {"CLIENT_PW": "correct horse battery"}
    out = cli(
        cli_env,
        "client",
        "--key-file",
        str(key_file),
        "--password-env",
        "CLIENT_PW",
        "key",
        "new",
        **pw,
    )
    address = out.stdout.strip()
    assert "correct horse" not in out.output
    stored = json.loads(key_file.read_text())
    assert "crypto" in stored and address.lower().endswith(stored["address"].lower())
    assert key_file.stat().st_mode & 0o077 == 0
    assert load_key(key_file, pw["CLIENT_PW"]).address == address
    again = cli(
        cli_env,
        "client",
        "--key-file",
        str(key_file),
        "--password-env",
        "CLIENT_PW",
        "key",
        "new",
        code=2,
        **pw,
    )
    assert "refusing to overwrite" in again.output
    wrong = cli(
        cli_env,
        "client",
        "--key-file",
        str(key_file),
        "--password-env",
        "CLIENT_PW",
        "balance",
        code=2,
        CLIENT_PW="wrong",
    )
    assert "wrong password" in wrong.output


def test_client_deposits_runs_and_sees_its_balance(
    env: ApiEnv, cli_env: dict[str, str], tmp_path: Path
) -> None:
    key = dev_keys(9)[8]
    key_file = tmp_path / "client.json"
    address = _import(cli_env, ["client", "key"], key_file, key)
    assert address == Account.from_key(key).address
    env.admin.transact(env.admin.token.functions.mint(address, 3 * TOKEN), "mint")
    kf = {KEY_FILE_ENV["client"]: str(key_file)}

    assert (
        "has more than 18 decimals"
        in cli(cli_env, "client", "deposit", "0.0000000000000000001", **kf, code=2).output
    )
    out = cli(cli_env, "client", "deposit", "2.5", **kf)
    assert "deposited 2.5 ILC; in the vault: 2.5 ILC" in out.stdout
    assert "digits-cnn" in cli(cli_env, "client", "models").stdout

    image = tmp_path / "digit.npy"
    np.save(image, samples(1, start=7)["input"][0])  # one row, without the batch axis
    with answering(env):
        ran = cli(
            cli_env,
            "client",
            "run",
            "--model",
            "digits-cnn",
            "--tensor",
            str(image),
            "--timeout",
            "30",
            **kf,
        )
        assert "accepted" in ran.stdout and "output logits [1, 10]" in ran.stdout
        job_id = cli(
            cli_env, "client", "submit", "--model", "digits-cnn", "--tensor", str(image), **kf
        ).stdout.strip()
        shown = cli(cli_env, "client", "status", job_id, "--wait", "20", "--json")
    job = json.loads(shown.stdout)["job"]
    assert job["job_id"] == job_id and job["status"] == "accepted"
    price = env.manifest.price_wei(1)

    balance = cli(cli_env, "client", "balance", **kf).stdout
    assert cell(balance, "deposited") == "2.5 ILC"
    assert cell(balance, "spent") == format_tokens(2 * price)
    assert cell(balance, "available") == format_tokens(25 * TOKEN // 10 - 2 * price)

    cli(cli_env, "client", "withdraw-request", "2.4", **kf)
    requested = cell(cli(cli_env, "client", "balance", **kf).stdout, "withdrawal requested")
    assert requested.startswith("2.4 ILC, unlocks at")
    locked = cli(cli_env, "client", "withdraw", **kf, code=1)
    assert "VaultWithdrawalLocked" in locked.output and "Traceback" not in locked.output
    unknown = cli(cli_env, "client", "run", "--model", "nope", "--text", "x", **kf, code=1)
    assert "unknown_model" in unknown.output


def test_a_client_without_a_deposit_is_refused_and_charged_nothing(
    env: ApiEnv, cli_env: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "stranger.json"
    address = _import(
        cli_env, ["client", "key"], key_file, "0x" + bytes(Account.create().key).hex()
    )
    refused = cli(
        cli_env,
        "client",
        "--key-file",
        str(key_file),
        "submit",
        "--model",
        "digits-cnn",
        "--tensor",
        str(_digit(tmp_path)),
        code=1,
    )
    assert "insufficient_deposit" in refused.output and "HTTP 402" in refused.output
    assert env.balance(address)["max_voucher_wei"] == "0"


def _digit(tmp_path: Path) -> Path:
    image = tmp_path / "digit.json"
    image.write_text(json.dumps(samples(1, start=3)["input"].tolist()))
    return image


def row(table: str, label: str) -> str:
    """The line of a printed table that holds ``label``."""
    return next(line for line in table.splitlines() if label in line)


def cell(table: str, label: str) -> str:
    """The value beside ``label`` (the start of the first cell) in a printed two-column table."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0].startswith(label):
            return cells[1]
    raise AssertionError(f"no row {label!r} in\n{table}")


def test_contributor_stakes_registers_earns_claims_and_unbonds(
    env: ApiEnv, cli_env: dict[str, str], tmp_path: Path
) -> None:
    wallet_file = tmp_path / "wallet.json"
    me = _import(cli_env, ["wallet"], wallet_file, dev_keys(8)[7])
    env.admin.transact(env.admin.token.functions.mint(me, 100 * TOKEN), "mint")
    kf = {KEY_FILE_ENV["wallet"]: str(wallet_file)}
    device_file = tmp_path / "device.json"
    device = create_key_file(device_file, None)  # as `inferledger worker init` writes it

    cli(cli_env, "wallet", "stake", "40", **kf)
    below = cli(cli_env, "wallet", "register", str(device_file), **kf, code=1)
    assert "StakeBelowMinimum" in below.output
    assert "bonded 100 ILC (minimum 50 ILC)" in cli(cli_env, "wallet", "stake", "60", **kf).stdout
    assert device.address in cli(cli_env, "wallet", "register", str(device_file), **kf).stdout
    listed = row(cli(cli_env, "wallet", "devices", **kf).stdout, device.address)
    assert "eligible" in listed and "never" in listed

    # earnings of a contributor whose devices work: pending, posted, claimable, claimed
    earner = env.contributors[0]
    earner_file = tmp_path / "earner.json"
    _import(cli_env, ["wallet"], earner_file, earner.key)
    ek = {KEY_FILE_ENV["wallet"]: str(earner_file)}
    for i in range(20):
        job = env.run_job(samples(1, start=i))
        if any(v["contributor"] == earner.address for v in job["attestations"]):
            break
    shown = cli(cli_env, "wallet", "earnings", **ek).stdout
    assert cell(shown, "pending") != "0 ILC" and cell(shown, "claimable") == "0 ILC"

    outcome = close_epoch(env.ctx)
    assert outcome is not None
    shown = cli(cli_env, "wallet", "earnings", **ek).stdout
    assert cell(shown, "pending") == "0 ILC"
    assert f"(epoch {outcome.number}, final at" in cell(shown, "in a posted epoch")
    assert "nothing to claim" in cli(cli_env, "wallet", "claim", **ek, code=1).output

    chain = env.ctx.chain
    record = EpochRecord.from_call(chain.call(chain.settlement.functions.epochs(outcome.number)))
    wait_claimable(chain.w3, record.claimable_at, 30)
    with httpx.Client(base_url=cli_env["INFERLEDGER_API_URL"]) as http:
        earned = earnings_of(env.actor(earner.key), http, earner.address)
    assert earned.claimable_wei > 0 and earned.in_posted_epoch_wei == earned.claimed_wei == 0
    shown = cli(cli_env, "wallet", "earnings", **ek).stdout
    assert cell(shown, "claimable") == f"{format_tokens(earned.claimable_wei)} (epoch 1)"
    before = int(chain.call(chain.token.functions.balanceOf(earner.address)))
    claimed = cli(cli_env, "wallet", "claim", **ek).stdout
    assert f"claimed {format_tokens(earned.claimable_wei)}" in claimed
    after = int(chain.call(chain.token.functions.balanceOf(earner.address)))
    assert after - before == earned.claimable_wei
    shown = cli(cli_env, "wallet", "earnings", **ek).stdout
    assert cell(shown, "claimed") == format_tokens(earned.claimable_wei)
    assert cell(shown, "claimable").startswith("0 ILC")
    cli(cli_env, "wallet", "claim", **ek, code=1)  # nothing more

    # the new device signs in; then its wallet unbonds below the minimum
    env.sign_in(load_key(device_file, None))
    assert "yes" in row(cli(cli_env, "wallet", "devices", **kf).stdout, device.address)
    out = cli(cli_env, "wallet", "unbond", "60", **kf).stdout
    assert "unbonding 60 ILC" in out and "bonded 40 ILC" in out
    assert "unbonding" in row(cli(cli_env, "wallet", "devices", **kf).stdout, device.address)
    assert "StakeUnbondingLocked" in cli(cli_env, "wallet", "withdraw", **kf, code=1).output
