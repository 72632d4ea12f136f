"""``inferledger``: the command line.

inferledger demo                 bring up the whole system and run the paid loop
inferledger audit --epoch N      verify epochs from chain records and epoch files
inferledger audit --replay N     ... and run N random jobs again, compared with consensus
inferledger worker init|run      the device worker agent
inferledger client ...           pay for inference: key, deposit, models, run, balance, withdraw
inferledger wallet ...           earn as a contributor: key, stake, devices, earnings, claim
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from inferledger.amounts import format_tokens
from inferledger.client_cli import app as client_app
from inferledger.wallet_cli import app as wallet_app
from protocol import recursion
from worker.cli import app as worker_app

if TYPE_CHECKING:
    from inferledger.demo import DemoResult

recursion.bound()  # py_ecc raised it: a hostile API's nested JSON must not crash us

app = typer.Typer(
    help="inferledger: pay per inference, verified on contributors' devices.", no_args_is_help=True
)
app.add_typer(worker_app, name="worker", help="The device worker agent: create a key, run jobs.")
app.add_typer(client_app, name="client")
app.add_typer(wallet_app, name="wallet")
console = Console()
_tokens = format_tokens
MAX_REPLAY = 100_000  # jobs one replay runs


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="inferledger demo", show_header=False)
    table.add_row("paid requests", str(summary["requests"]))
    table.add_row(
        "consensus rate", f"{summary['consensus_rate']:.1%} ({summary['accepted']} accepted)"
    )
    table.add_row("accuracy (digits labels)", f"{summary['accuracy']:.1%}")
    table.add_row("client paid (redeemed on chain)", _tokens(summary["client_paid_wei"]))
    for c in summary["contributors"]:
        table.add_row(
            f"contributor {c['contributor'][:10]}…",
            f"earned {_tokens(c['earned_wei'])}, claimed {_tokens(c['claimed_wei'])}",
        )
    table.add_row("protocol fees", _tokens(summary["fees_wei"]))
    table.add_row("epochs settled", str(summary["epochs"]))
    gas = summary["gas_used"]
    table.add_row(
        "gas used",
        f"{gas['total']:,} (epochs {gas['settler_epochs']:,}; deploy, "
        f"deposits, stakes, claims {gas['deploy_and_actors']:,})",
    )
    table.add_row("audit", "passed" if summary["audit_ok"] else "FAILED")
    table.add_row("elapsed", f"{summary['elapsed_s']} s")
    console.print(table)


@app.command()
def demo(
    requests: Annotated[
        int, typer.Option(min=1, max=10_000, help="Paid inference requests the client makes.")
    ] = 60,
    redis_url: Annotated[
        str, typer.Option(envvar="INFERLEDGER_REDIS_URL", help="Redis for Celery.")
    ] = "redis://127.0.0.1:6379/0",
    epoch_interval_s: Annotated[
        float, typer.Option(min=1.0, help="Seconds between epoch closes (Celery beat).")
    ] = 4.0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the run keeps its database, logs and epoch files (wiped first)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary as JSON here.")
    ] = None,
    stay: Annotated[
        bool,
        typer.Option(
            "--stay",
            help="Keep every process running after the demo, to look at it in the explorer "
            "(the URL is printed); Ctrl-C stops them and ends the demo with its usual exit "
            "status (0 when the demo passed).",
        ),
    ] = False,
) -> None:
    """Start a Hardhat node, deploy, start the API, Celery worker and beat and three device
    workers; a client pays for REQUESTS inferences; epochs settle on chain; contributors
    claim; the audit runs. Every process is stopped at the end (with --stay, at Ctrl-C),
    also on Ctrl-C or failure."""
    from inferledger.demo import DemoConfig, run_demo

    logging.basicConfig(level=logging.WARNING)
    cfg = DemoConfig(
        requests=requests,
        redis_url=redis_url,
        epoch_interval_s=epoch_interval_s,
        progress=lambda msg: console.print(f"[dim]•[/dim] {msg}"),
    )
    if data_dir is not None:
        cfg.data_dir = data_dir
    if stay:
        cfg.inspect = lambda result: _stay(result, json_out)
    try:
        result = run_demo(cfg)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every process was stopped[/yellow]")
        raise typer.Exit(130) from None
    except (TimeoutError, RuntimeError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}\nlogs: {cfg.data_dir / 'logs'}")
        raise typer.Exit(1) from None
    if not stay:
        print_summary(result.summary)
        if json_out:
            json_out.write_text(json.dumps(result.summary, indent=2))
    if not (
        result.summary["audit_ok"] and result.summary["accepted"] == result.summary["requests"]
    ):
        for fault in result.audit.faults:
            console.print(f"[red]{fault['check']}[/red] epoch {fault['epoch']}: {fault['detail']}")
        raise typer.Exit(1)


def _stay(result: DemoResult, json_out: Path | None) -> None:
    """The demo's result while every process still runs: shown (and written), then kept
    until Ctrl-C."""
    print_summary(result.summary)
    if json_out:
        json_out.write_text(json.dumps(result.summary, indent=2))
    console.print(
        f"explorer: {result.api_url}/explorer   API: {result.api_url}/docs   "
        f"chain: {result.rpc_url}\n[dim]everything keeps running; Ctrl-C stops it[/dim]"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping every process")


@app.command()
def audit(
    epoch: Annotated[
        int | None,
        typer.Option(
            help="Audit epoch EPOCH, with every epoch before it (earnings are cumulative); "
            "default: every posted epoch."
        ),
    ] = None,
    rpc_url: Annotated[
        str, typer.Option(envvar="INFERLEDGER_RPC_URL", help="JSON-RPC of the chain.")
    ] = "http://127.0.0.1:8545",
    deployment_file: Annotated[
        Path, typer.Option(envvar="INFERLEDGER_DEPLOYMENT_FILE", help="Contract addresses (JSON).")
    ] = Path(".inferledger/data/deployment.json"),
    api_url: Annotated[str | None, typer.Option(help="Fetch epoch files from this API.")] = None,
    files: Annotated[
        Path | None, typer.Option(help="Or read epoch-NNNNNN.json files from this directory.")
    ] = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(
            help="Model manifests, for cross-class tolerances, and the models --replay runs "
            "(default: the repo's)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    replay: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_REPLAY,
            help="Also run N random accepted jobs again with onnxruntime (inputs from "
            "--api-url, checked against their input_hash) and compare with their consensus; "
            "0: off.",
        ),
    ] = 0,
    replay_seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=2**64 - 1,
            help="Seed of the random pick, to repeat a replay (default: from os.urandom; "
            "the seed used is printed).",
        ),
    ] = None,
) -> None:
    """Verify epochs from the chain and the epoch files alone: file hashes; every attestation
    signature, and its worker registered to its contributor while the epoch ran; every
    consensus decision again from the votes (tolerance rule included) and every payout split;
    each job's price within its voucher, each voucher's signature and charge against the
    vault's redemptions; leaves, roots, totals; money conserved to the wei between vault,
    epochs, claims, fees and slashes. With --replay N, N random accepted jobs are run again
    and must agree with their consensus: bit for bit in the consensus's fingerprint class
    when this machine can run it, else within the model's tolerance of the outputs the file
    reveals (jobs that allow neither are not picked). Each fault is printed with its check's
    name (docs/audit.md). Exits 0 only when every check holds, 1 otherwise, 2 on bad usage."""
    from inferledger.audit import Auditor, model_tolerances
    from ledger.chain.client import connect
    from ledger.config import REPO_ROOT
    from protocol.contracts import CONTRACT_NAMES, Deployment, artifact

    if (api_url is None) == (files is None):
        console.print("[red]give exactly one of --api-url or --files[/red]")
        raise typer.Exit(2)
    if replay and api_url is None:
        console.print("[red]--replay fetches the jobs' inputs from the API: give --api-url[/red]")
        raise typer.Exit(2)

    def fetch(n: int) -> bytes:
        if files is not None:
            return (files / f"epoch-{n:06d}.json").read_bytes()
        response = httpx.get(f"{api_url}/v1/epochs/{n}/file", timeout=30)
        response.raise_for_status()
        return response.content

    abis = {n: artifact(REPO_ROOT / "artifacts", n)["abi"] for n in CONTRACT_NAMES}
    tolerances = model_tolerances(models_dir or REPO_ROOT / "models")
    deployment = Deployment.load(deployment_file)
    auditor = Auditor(connect(rpc_url), deployment, abis, fetch, tolerances)
    report = auditor.audit(epoch)
    if replay and api_url is not None:
        from inferledger.audit_cli import run_replay

        seed = replay_seed if replay_seed is not None else int.from_bytes(os.urandom(8), "big")
        models = models_dir or REPO_ROOT / "models"
        run_replay(report, auditor.documents, api_url, models, replay, seed, quiet=as_json)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(f"audited epochs {report.epochs}: {sum(report.checks.values())} checks")
        for fault in report.faults:
            console.print(
                f"[red]FAULT {fault['check']}[/red] epoch {fault['epoch']}: {fault['detail']}"
            )
        console.print("[green]audit passed[/green]" if report.ok else "[red]audit failed[/red]")
    raise typer.Exit(0 if report.ok else 1)


if __name__ == "__main__":
    app()
