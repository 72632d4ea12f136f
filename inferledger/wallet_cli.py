"""``inferledger wallet``: earn as a contributor from a terminal.

A key file for the wallet (``new`` / ``import``), stake, register a device key (the device
signs to prove it holds its key), the devices and their state, earnings in four parts
(pending, in a posted epoch, claimable, claimed), claim, unbond and withdraw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inferledger import actors
from inferledger.amounts import format_tokens
from inferledger.cli_common import (
    EXIT_REFUSED,
    add_key_commands,
    add_target_options,
    console,
    errors_as_exit,
    fail,
    password_for,
    target,
    tokens_arg,
    tokens_received,
    when,
)
from inferledger.wallet import devices_of, earnings_of, stake_of
from worker.keys import is_keystore, load_key

app = typer.Typer(
    name="wallet",
    help="Earn as a contributor: a key, stake, devices, earnings, claims, unbonding.",
    no_args_is_help=True,
    add_completion=False,
)
add_target_options(
    app,
    key_envvar="INFERLEDGER_WALLET_KEY_FILE",
    default_key_file=Path.home() / ".inferledger" / "wallet.json",
)
add_key_commands(app)


@app.command()
def stake(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help="Tokens to bond, e.g. 100.")],
) -> None:
    """Bond AMOUNT tokens in the stake registry (devices are eligible at the minimum)."""
    amount_wei = tokens_arg(amount)
    chain = target(ctx).chain()
    with errors_as_exit():
        actors.stake(chain, amount_wei)
        now = stake_of(chain, chain.address)
    console.print(
        f"staked {format_tokens(amount_wei)}; bonded {format_tokens(now.bonded_wei)} "
        f"(minimum {format_tokens(now.min_stake_wei)})"
    )


@app.command()
def register(
    ctx: typer.Context,
    device_key_file: Annotated[
        Path, typer.Argument(help="The device's key file (`inferledger worker init`).")
    ],
    device_password_env: Annotated[
        str | None,
        typer.Option(
            "--device-password-env",
            metavar="NAME",
            help="Environment variable holding the device keystore's password.",
        ),
    ] = None,
) -> None:
    """Register a device key to this wallet; the device key signs the registration."""
    with errors_as_exit():
        keystore = is_keystore(device_key_file)
        device = load_key(
            device_key_file, password_for(device_password_env, new=False) if keystore else None
        )
    chain = target(ctx).chain()
    with errors_as_exit():
        worker = actors.register_device(chain, bytes(device.key))
    console.print(f"registered device {worker} to {chain.address}")


@app.command()
def devices(
    ctx: typer.Context,
) -> None:
    """The wallet's devices: state on chain (eligible, registered, unbonding, jailed,
    removed) and, from the API, when each was last seen, what it holds, its faults and its
    replicated jobs agreed in a row (the trust of adaptive replication)."""
    import httpx

    chain = target(ctx).chain()
    with errors_as_exit(), httpx.Client(base_url=target(ctx).api_url, timeout=30) as http:
        found = devices_of(chain, http, chain.address)
        bonds = stake_of(chain, chain.address)
    table = Table(
        title=f"devices of {chain.address}",
        caption=f"bonded {format_tokens(bonds.bonded_wei)}, unbonding "
        f"{format_tokens(bonds.unbonding_wei)}, minimum {format_tokens(bonds.min_stake_wei)}",
    )
    for column in ("device", "state", "online", "last seen", "in flight", "faults", "agreed"):
        table.add_column(column)
    for d in found:
        table.add_row(
            d.address,
            d.state,
            "yes" if d.online else "no",
            "never" if d.last_seen_s_ago is None else f"{d.last_seen_s_ago:g} s ago",
            str(d.in_flight),
            f"{d.safety_faults} safety, {d.liveness_faults} liveness",
            f"{d.agreed_streak} in a row",
        )
    console.print(table)
    if not found:
        console.print("no device registered yet: `inferledger wallet register DEVICE_KEYFILE`")


@app.command()
def earnings(
    ctx: typer.Context,
) -> None:
    """Earnings: pending (not yet in a posted epoch), in a posted epoch (within its
    challenge window), claimable (under a final epoch) and claimed."""
    import httpx

    chain = target(ctx).chain()
    with errors_as_exit(), httpx.Client(base_url=target(ctx).api_url, timeout=30) as http:
        e = earnings_of(chain, http, chain.address)
    table = Table(title=f"earnings of {chain.address}", show_header=False)
    table.add_row("pending (in no posted epoch yet)", format_tokens(e.pending_wei))
    posted = format_tokens(e.in_posted_epoch_wei)
    if e.in_posted_epoch_wei:
        posted += f" (epoch {e.posted_epoch}, final at {when(e.posted_claimable_at)})"
    table.add_row("in a posted epoch", posted)
    claimable = format_tokens(e.claimable_wei)
    if e.final_epoch:
        claimable += f" (epoch {e.final_epoch})"
    table.add_row("claimable", claimable)
    table.add_row("claimed", format_tokens(e.claimed_wei))
    console.print(table)


@app.command()
def claim(
    ctx: typer.Context,
) -> None:
    """Claim everything under the newest final epoch's root (exits 1 if nothing is)."""
    import httpx

    chain = target(ctx).chain()
    with errors_as_exit(), httpx.Client(base_url=target(ctx).api_url, timeout=30) as http:
        e = earnings_of(chain, http, chain.address)
        if e.claimable_wei == 0:
            later = (
                f"; {format_tokens(e.in_posted_epoch_wei)} becomes claimable at "
                f"{when(e.posted_claimable_at)}"
                if e.in_posted_epoch_wei
                else ""
            )
            fail(f"nothing to claim{later}", EXIT_REFUSED)
        actors.claim(chain, e.final_epoch, chain.address, e.final_cumulative_wei, e.final_proof)
    console.print(f"claimed {format_tokens(e.claimable_wei)} (epoch {e.final_epoch})")


@app.command()
def unbond(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help="Tokens to unbond, e.g. 50.")],
) -> None:
    """Start unbonding AMOUNT tokens; `withdraw` pays them after the unbonding delay. Stake
    below the minimum makes the wallet's devices ineligible at once."""
    amount_wei = tokens_arg(amount)
    chain = target(ctx).chain()
    with errors_as_exit():
        actors.request_unbond(chain, amount_wei)
        now = stake_of(chain, chain.address)
    console.print(
        f"unbonding {format_tokens(now.unbonding_wei)}, unlocks at {when(now.unlock_at)}; "
        f"bonded {format_tokens(now.bonded_wei)}"
    )


@app.command()
def withdraw(
    ctx: typer.Context,
) -> None:
    """Withdraw the unbonded stake once its unbonding delay is over."""
    received = tokens_received(target(ctx).chain(), actors.withdraw_unbonded)
    console.print(f"withdrew {format_tokens(received)} of unbonded stake")
