"""A contributor's page (stake, devices, earnings per epoch, faults) and a client's (spend)."""

from __future__ import annotations

from fastapi.responses import HTMLResponse
from sqlmodel import Session

from api.explorer.charts import bar_chart
from api.explorer.epochs import job_table
from api.explorer.html import (
    Html,
    badge,
    facts,
    link,
    page,
    path,
    row,
    section,
    short,
    table,
    token_label,
    tokens,
    when,
)
from api.routes.clients import client_balance
from api.routes.contributors import devices
from ledger import explorer as ex
from ledger.chain.projection import stake_of
from ledger.context import Context
from ledger.earnings import contributor_earnings
from ledger.errors import NotFound
from ledger.models import Client

Amounts = dict[int | None, int]


def _per_epoch_chart(title: str, amounts: Amounts, numbers: list[int], id_: str) -> Html:
    """One bar per epoch of ``numbers`` (zero where nothing), then one for what no epoch
    holds yet when there is any."""
    points = [(str(n), amounts.get(n, 0)) for n in numbers]
    if amounts.get(None):
        points.append(("pending", amounts[None]))
    return bar_chart(title, points, id_=id_, x_title="epoch", show=token_label)


def _per_epoch_rows(amounts: Amounts) -> list[tuple[object, object]]:
    numbered = sorted((n, v) for n, v in amounts.items() if n is not None)
    rows: list[tuple[object, object]] = [
        (link(path("epochs", n), n), tokens(v)) for n, v in reversed(numbered)
    ]
    if amounts.get(None):
        rows.insert(0, ("not in an epoch yet", tokens(amounts[None])))
    return rows


def contributor(session: Session, ctx: Context, owner: str) -> HTMLResponse:
    """``owner`` is a checked (EIP-55) address."""
    found = devices(owner, session, ctx)
    earned = contributor_earnings(session, owner)
    stake = stake_of(session, owner)
    if not found and not earned.earned_wei and not stake.bonded_wei + stake.unbonding_wei:
        raise NotFound(f"No contributor {owner} has staked, signed in a device or earned.")
    per_epoch = ex.earnings_by_epoch(session, owner)
    slashes = ex.slashes_of(session, owner)
    posted_label = f"under epoch {earned.posted_epoch}'s root (claimable once final)"
    summary = facts(
        [
            ("stake bonded", tokens(stake.bonded_wei)),
            ("stake unbonding", tokens(stake.unbonding_wei)),
            ("earned in all", tokens(earned.earned_wei)),
            (posted_label, tokens(earned.posted_wei)),
            ("pending (next epoch)", tokens(earned.pending_wei)),
            ("devices", len(found)),
            ("safety faults", sum(d.safety_faults for d in found)),
            ("liveness faults", sum(d.liveness_faults for d in found)),
            ("slashes", len(slashes)),
        ],
        id_="contributor",
    )
    numbers = [e.number for e in ex.newest_epochs(session)]
    chart = _per_epoch_chart("Earnings per epoch", per_epoch, numbers, "chart-earnings")
    device_rows = [
        (
            short(d.address, 12),
            badge("eligible" if d.eligible else "not eligible", d.eligible),
            badge("online" if d.online else "offline", d.online or None),
            "—" if d.last_seen_s_ago is None else f"{d.last_seen_s_ago:g} s ago",
            d.in_flight,
            d.safety_faults,
            d.liveness_faults,
        )
        for d in found
    ]
    device_headers = ["device", "eligible", "online", "seen", "in flight", "safety", "liveness"]
    slash_rows = [
        (
            short(s.worker, 12),
            link(path("jobs", s.job_id), short(s.job_id)),
            link(path("epochs", s.epoch), s.epoch),
            s.status,
            s.detail or "",
            when(s.created_at),
        )
        for s in slashes
    ]
    return page(
        f"Contributor {owner}",
        row(section("Summary", summary), chart),
        section("Devices", table(device_headers, device_rows, id_="devices")),
        section(
            "Earnings per epoch",
            table(["epoch", "earned"], _per_epoch_rows(per_epoch), id_="earnings"),
        ),
        section(
            "Slashes",
            table(
                ["device", "job", "epoch", "status", "detail", "when"], slash_rows, id_="slashes"
            ),
        ),
    )


def client(session: Session, ctx: Context, address: str) -> HTMLResponse:
    """``address`` is a checked (EIP-55) address."""
    jobs, total = ex.jobs_page(session, client=address)
    if not total and session.get(Client, address) is None:
        raise NotFound(f"No client {address} has deposited or paid for a job.")
    balance = client_balance(address, session)
    summary = facts(
        [
            ("deposited", tokens(int(balance.deposited_wei))),
            ("spent (charged for accepted jobs)", tokens(int(balance.charged_wei))),
            ("held for jobs in progress", tokens(int(balance.held_wei))),
            ("available", tokens(int(balance.available_wei))),
            ("highest voucher signed", tokens(int(balance.max_voucher_wei))),
            ("jobs", total),
        ],
        id_="client",
    )
    spend = ex.spend_by_epoch(session, address)
    numbers = [e.number for e in ex.newest_epochs(session)]
    shown = f"Newest jobs ({len(jobs)} of {total})" if total > len(jobs) else f"Jobs ({total})"
    return page(
        f"Client {address}",
        row(
            section("Spend", summary),
            _per_epoch_chart("Spend per epoch", spend, numbers, "chart-spend"),
        ),
        section("Spend per epoch", table(["epoch", "spent"], _per_epoch_rows(spend), id_="spend")),
        section(shown, job_table(session, ctx, jobs)),
    )
