"""``inferledger client``: pay for inference from a terminal.

A key file (``key new`` / ``key import``), a deposit into the vault with an EIP-2612
permit, the models and their prices, paid requests (``run`` waits, ``submit`` and ``status``
do not), the balance, and withdrawing what is not owed after the vault's notice period.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer
from rich.table import Table

from inferledger import actors
from inferledger.amounts import format_tokens
from inferledger.cli_common import (
    EXIT_USAGE,
    add_key_commands,
    add_target_options,
    console,
    errors_as_exit,
    fail,
    target,
    tokens_arg,
    tokens_received,
    when,
)
from inferledger.client import InferenceClient
from inferledger.receipts import Receipt

app = typer.Typer(
    name="client",
    help="Pay per inference: a key, a deposit, models, paid requests, balance, withdrawal.",
    no_args_is_help=True,
    add_completion=False,
)
key_app = typer.Typer(help="Create or import the client's key file.", no_args_is_help=True)
app.add_typer(key_app, name="key")

add_target_options(
    app,
    key_envvar="INFERLEDGER_CLIENT_KEY_FILE",
    default_key_file=Path.home() / ".inferledger" / "client-key.json",
)
add_key_commands(key_app)
ModelOpt = Annotated[str, typer.Option("--model", help="Model name or hash (see `models`).")]
TextOpt = Annotated[
    list[str] | None,
    typer.Option("--text", help="A text for a text model; repeat for more rows."),
]
TensorOpt = Annotated[
    Path | None,
    typer.Option(
        "--tensor",
        help="Inputs of a tensor model: .npy (the model's one input), .npz (by input name) or "
        ".json (a nested list, or an object of them by input name).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the job and receipt as JSON.")]


# -- chain -----------------------------------------------------------------------------
@app.command()
def deposit(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help="Tokens to deposit, e.g. 1.5.")],
) -> None:
    """Deposit AMOUNT tokens into the vault in one transaction, approved by a permit."""
    amount_wei = tokens_arg(amount)
    chain = target(ctx).chain()
    with errors_as_exit():
        actors.deposit_with_permit(chain, amount_wei)
        total = int(chain.call(chain.vault.functions.depositOf(chain.address)))
    console.print(f"deposited {format_tokens(amount_wei)}; in the vault: {format_tokens(total)}")


@app.command("withdraw-request")
def withdraw_request(
    ctx: typer.Context,
    amount: Annotated[str, typer.Argument(help="Tokens to withdraw, e.g. 1.5.")],
) -> None:
    """Give notice to withdraw AMOUNT tokens; `withdraw` pays them after the notice period."""
    amount_wei = tokens_arg(amount)
    chain = target(ctx).chain()
    with errors_as_exit():
        actors.request_withdrawal(chain, amount_wei)
        _, unlock_at = chain.call(chain.vault.functions.pendingWithdrawalOf(chain.address))
    console.print(f"withdrawal of {format_tokens(amount_wei)} requested; {_unlocks(unlock_at)}")


@app.command()
def withdraw(
    ctx: typer.Context,
) -> None:
    """Withdraw the requested amount once its notice period is over."""
    received = tokens_received(target(ctx).chain(), actors.withdraw)
    console.print(f"withdrew {format_tokens(received)}")


def _unlocks(unlock_at: int) -> str:
    return f"unlocks at {when(unlock_at)}"


# -- the API ---------------------------------------------------------------------------
@app.command()
def models(ctx: typer.Context) -> None:
    """The models the API serves and their prices."""

    with errors_as_exit(), InferenceClient(target(ctx).api_url, None) as client:
        found = client.models()
    table = Table(title="models")
    for column in ("name", "version", "input", "price per row", "max rows", "hash"):
        table.add_column(column)
    for m in found:
        table.add_row(
            m["name"],
            m["version"],
            m["input_kind"],
            format_tokens(int(m["price_per_row_wei"])),
            str(m["max_batch_rows"]),
            m["model_hash"],
        )
    console.print(table)


@app.command()
def balance(
    ctx: typer.Context,
) -> None:
    """Deposited, spent, pending (held by open jobs), available, and what the chain holds."""
    with errors_as_exit(), target(ctx).client() as client:
        b = client.balance()
        me = client.address
        chain = target(ctx).chain(signed=False)
        vault = int(chain.call(chain.vault.functions.depositOf(me)))
        redeemed = int(chain.call(chain.vault.functions.redeemedOf(me)))
        pending, unlock_at = chain.call(chain.vault.functions.pendingWithdrawalOf(me))
        wallet = int(chain.call(chain.token.functions.balanceOf(me)))
    table = Table(title=f"client {me}", show_header=False)
    table.add_row("deposited", format_tokens(int(b["deposited_wei"])))
    table.add_row("spent (charged for accepted jobs)", format_tokens(int(b["charged_wei"])))
    table.add_row("pending (held by open jobs)", format_tokens(int(b["held_wei"])))
    table.add_row("available (to spend or withdraw)", format_tokens(int(b["available_wei"])))
    table.add_row("redeemed on chain (settled)", format_tokens(redeemed))
    table.add_row("in the vault on chain", format_tokens(vault))
    if int(pending):
        table.add_row(
            "withdrawal requested", f"{format_tokens(int(pending))}, {_unlocks(unlock_at)}"
        )
    table.add_row("last voucher total", format_tokens(int(b["max_voucher_wei"])))
    table.add_row("wallet (not deposited)", format_tokens(wallet))
    console.print(table)


def _as_inputs(model: dict[str, Any], tensor: Path) -> dict[str, npt.NDArray[Any]]:
    """A tensor file as the model's named inputs, with a batch axis."""
    specs = {s["name"]: s for s in model["inputs"]}
    try:
        if tensor.suffix == ".npy":
            loaded: dict[str, Any] = {next(iter(specs)): np.load(tensor, allow_pickle=False)}
        elif tensor.suffix == ".npz":
            with np.load(tensor, allow_pickle=False) as npz:
                loaded = {k: npz[k] for k in npz.files}
        elif tensor.suffix == ".json":
            data = json.loads(tensor.read_text())
            loaded = data if isinstance(data, dict) else {next(iter(specs)): data}
        else:
            fail(f"--tensor {tensor}: expected a .npy, .npz or .json file", EXIT_USAGE)
    except (OSError, ValueError) as exc:
        fail(f"--tensor {tensor}: {exc}", EXIT_USAGE)
    out = {}
    for name, value in loaded.items():
        spec = specs.get(name)
        if spec is None:
            fail(f"--tensor: the model has no input {name!r} (it has {', '.join(specs)})", 2)
        array = np.asarray(value, dtype=spec["dtype"])
        out[name] = array[None] if array.ndim == len(spec["shape"]) - 1 else array
    return out


def _submit(
    client: InferenceClient, model: str, text: list[str] | None, tensor: Path | None
) -> dict[str, Any]:
    if (text is None) == (tensor is None):
        fail("give --text (a text model) or --tensor FILE (a tensor model)", EXIT_USAGE)
    found = client.model(model)
    if text is not None:
        return client.submit_texts(found["model_hash"], text)
    assert tensor is not None
    return client.submit(found["model_hash"], _as_inputs(found, tensor))


@app.command()
def run(
    ctx: typer.Context,
    model: ModelOpt,
    text: TextOpt = None,
    tensor: TensorOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.0, help="Seconds to wait for the result.")
    ] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Pay for one request and wait for its result and receipt. Exits 3 if it is not decided
    within --timeout (poll it with `status`), or fails (then nothing is charged)."""
    with errors_as_exit(), target(ctx).client() as client:
        job = _submit(client, model, text, tensor)
        receipt = client.result(job["job_id"], timeout)
    _show(receipt, as_json)


@app.command()
def submit(
    ctx: typer.Context,
    model: ModelOpt,
    text: TextOpt = None,
    tensor: TensorOpt = None,
) -> None:
    """Pay for one request and print its job id at once (see `status`)."""
    with errors_as_exit(), target(ctx).client() as client:
        job = _submit(client, model, text, tensor)
    typer.echo(f"{job['status']}, price {format_tokens(int(job['price_wei']))}", err=True)
    typer.echo(job["job_id"])


@app.command()
def status(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="A job id from `submit`.")],
    wait: Annotated[
        float, typer.Option("--wait", min=0.0, help="Seconds to wait for a decision.")
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """A job's state; once decided its result and receipt, verified, with the Merkle proof
    of its result once its epoch is posted."""
    with (
        errors_as_exit(),
        InferenceClient(target(ctx).api_url, None, timeout_s=30 + wait) as client,
    ):
        receipt = client.receipt(client.wait(job_id, wait))
    _show(receipt, as_json)


def _show(receipt: Receipt, as_json: bool) -> None:
    job = receipt.job
    if as_json:
        typer.echo(json.dumps({"job": job, "result_proof": receipt.proof}, indent=2))
        return
    table = Table(title=f"job {receipt.job_id}", show_header=False)
    table.add_row("status", receipt.status + (f" ({job['failure']})" if job["failure"] else ""))
    charged = receipt.price_wei if receipt.status == "accepted" else 0
    table.add_row("price", f"{format_tokens(receipt.price_wei)} (charged {format_tokens(charged)})")
    table.add_row("rows", str(job["rows"]))
    table.add_row(
        "attestations",
        f"{len(receipt.attestations)} signed, verified: "
        + ", ".join(v["worker"][:10] + "…" for v in receipt.attestations),
    )
    if receipt.proof is not None:
        table.add_row(
            "proof",
            f"in epoch {receipt.epoch}: verified under results root "
            + receipt.proof["results_root"],
        )
    elif receipt.status == "accepted":
        table.add_row("proof", "not yet: the job's epoch is not posted")
    for name, array in receipt.outputs().items():
        text = np.array2string(array, precision=4, threshold=40, suppress_small=True)
        table.add_row(f"output {name} {list(array.shape)}", text)
    console.print(table)
