"""The explorer's front page (epochs and the charts), an epoch's page and a job's page."""

from __future__ import annotations

import json

from fastapi.responses import HTMLResponse
from sqlmodel import Session, select

from api.explorer.charts import Point, bar_chart, charts, line_chart
from api.explorer.html import (
    Html,
    badge,
    facts,
    join,
    link,
    page,
    path,
    section,
    short,
    table,
    tag,
    token_label,
    tokens,
    when,
)
from api.routes.clients import job_public
from ledger import explorer as ex
from ledger.context import Context
from ledger.epochs import epoch_path
from ledger.errors import NotFound
from ledger.journal import TransferKind, contributor_account
from ledger.models import Epoch, EpochStatus, Job, JobStatus, Transfer
from protocol import epochfile

GOOD_CHECKS = {
    ex.CheckStatus.MATCHES: True,
    ex.CheckStatus.MISMATCH: False,
    ex.CheckStatus.VETOED: False,
}
DECIDED: dict[str, bool] = {JobStatus.ACCEPTED: True, JobStatus.FAILED: False}  # badge colours


def check_badge(check: ex.EpochCheck) -> Html:
    text = check.status + (", final" if check.final else "")
    return badge(text, GOOD_CHECKS.get(check.status))


def _rate(counts: dict[str, int]) -> str:
    rate = ex.consensus_rate(counts)
    return "—" if rate is None else f"{rate:.1%}"


def _paid_in(epoch: Epoch, before: tuple[int, int]) -> tuple[int, int]:
    """The payout and fees of this epoch alone (its cumulative totals less the previous)."""
    if epoch.status != EpochStatus.POSTED:
        return 0, 0
    return epoch.cumulative_payout_wei - before[0], epoch.cumulative_fees_wei - before[1]


def home(session: Session) -> HTMLResponse:
    epochs = ex.newest_epochs(session)
    checks = ex.epoch_checks(session, epochs)
    counts = ex.decisions_by_epoch(session, [e.number for e in epochs])
    before = ex.previous_totals(session, epochs[0].number) if epochs else (0, 0)
    rows = []
    earned: list[Point] = []
    rates: list[Point] = []
    for e in epochs:
        payout, fees = _paid_in(e, before)
        if e.status == EpochStatus.POSTED:
            before = (e.cumulative_payout_wei, e.cumulative_fees_wei)
            earned.append((str(e.number), payout))
        mine = counts.get(e.number, {})
        rate = ex.consensus_rate(mine)
        if rate is not None:
            rates.append((str(e.number), round(rate * 100, 2)))
        rows.append(
            (
                link(path("epochs", e.number), e.number),
                e.status,
                e.jobs,
                _rate(mine),
                tokens(payout),
                tokens(fees),
                short(e.root),
                check_badge(checks[e.number]),
                when(e.posted_at),
            )
        )
    figures = _front_charts(session, earned, rates)
    headers = ["epoch", "status", "jobs", "consensus", "payout", "fees", "root", "check", "posted"]
    listing = table(headers, reversed(rows), id_="epochs")
    note = tag(
        "p",
        "check: the ledger's root and file hash against the EpochPosted event in the chain "
        "index. The full audit is `inferledger audit` (docs/audit.md).",
        class_="note",
    )
    return page("Epochs", figures, section(f"The newest {len(rows)} epochs", listing, note))


def _front_charts(session: Session, earned: list[Point], rates: list[Point]) -> Html:
    per_minute = [(minute_label(t), n) for t, n in ex.jobs_per_minute(session)]
    return charts(
        bar_chart(
            "Contributors' earnings per epoch",
            earned,
            id_="chart-earnings",
            x_title="epoch",
            show=token_label,
        ),
        bar_chart(
            "Jobs per minute",
            per_minute,
            id_="chart-jobs-per-minute",
            x_title="minute (UTC), the hour up to the newest job",
        ),
        line_chart(
            "Consensus rate per epoch",
            rates,
            id_="chart-consensus",
            x_title="epoch",
            fixed_max=100,
            show=lambda v: f"{v:g}%",
        ),
    )


def minute_label(ts: int) -> str:
    """A minute's label: ``HH:MM`` UTC."""
    return f"{ts // 3600 % 24:02d}:{ts // 60 % 60:02d}"


def _file_check(ctx: Context, epoch: Epoch) -> Html:
    """Whether the published file's keccak256 is the posted file hash."""
    if epoch.status != EpochStatus.POSTED:
        return badge("not published", None)
    try:
        raw = epoch_path(ctx, epoch.number).read_bytes()
    except OSError:
        return badge("file missing", False)
    same = "0x" + epochfile.file_hash(raw).hex() == (epoch.file_hash or "").lower()
    return badge("keccak256 matches" if same else "keccak256 differs", same)


def epoch(session: Session, ctx: Context, number: int) -> HTMLResponse:
    e = session.get(Epoch, number)
    if e is None:
        raise NotFound(f"There is no epoch {number}.")
    check = ex.epoch_checks(session, [e])[number]
    counts = ex.decisions_by_epoch(session, [number]).get(number, {})
    payout, fees = _paid_in(e, ex.previous_totals(session, number))
    file_link = link(f"/v1/epochs/{number}/file", "epoch file (JSON)")
    summary = facts(
        [
            ("status", e.status),
            ("jobs", e.jobs),
            ("accepted", counts.get(JobStatus.ACCEPTED, 0)),
            ("failed", counts.get(JobStatus.FAILED, 0)),
            ("consensus rate", _rate(counts)),
            ("root", tag("code", e.root or "—", id="root")),
            ("file hash", join((tag("code", e.file_hash or "—"), " ", file_link))),
            ("paid to contributors", tokens(payout)),
            ("fees", tokens(fees)),
            ("cumulative payout", tokens(e.cumulative_payout_wei)),
            ("cumulative fees", tokens(e.cumulative_fees_wei)),
            ("closed", when(e.closed_at)),
            ("posted", when(e.posted_at)),
            ("gas used", f"{e.gas_used:,}"),
        ],
        id_="epoch",
    )
    audit = facts(
        [
            ("chain index", check_badge(check)),
            ("root on chain", tag("code", check.chain_root or "—", id="chain-root")),
            ("posted in block", check.block_number or "—"),
            ("posting transaction", short(e.post_tx or check.tx_hash, 18)),
            ("final from", when(check.claimable_at)),
            ("published file", _file_check(ctx, e)),
            ("full audit", f"not run by this page: inferledger audit --epoch {number}"),
        ],
        id_="audit",
    )
    jobs, total = ex.jobs_page(session, epoch=number)
    shown = f"Jobs ({len(jobs)} of {total})" if total > len(jobs) else f"Jobs ({total})"
    nav = join(
        (
            link(path("epochs", number - 1), "← previous") if number > 1 else "",
            " ",
            link(path("epochs", number + 1), "next →"),
        )
    )
    return page(
        f"Epoch {number}",
        tag("p", nav),
        section("Summary", summary),
        section("Audit status", audit),
        section(shown, job_table(session, ctx, jobs)),
    )


def job_table(session: Session, ctx: Context, jobs: list[Job]) -> Html:
    votes = ex.votes_of(session, [j.id for j in jobs])
    rows = [
        (
            link(path("jobs", j.id), short(j.id)),
            model_name(ctx, j.model_hash),
            link(path("clients", j.client), short(j.client)),
            badge(j.status, DECIDED.get(j.status)),
            tokens(j.price_wei),
            votes.get(j.id, 0),
            when(j.decided_at),
        )
        for j in jobs
    ]
    headers = ["job", "model", "client", "status", "price", "votes", "decided"]
    return table(headers, rows, id_="jobs")


def model_name(ctx: Context, model_hash: str) -> str:
    found = ctx.models.get(model_hash.lower().removeprefix("0x"))
    return f"{found.name} {found.version}" if found else model_hash


def job(session: Session, ctx: Context, job_id: str) -> HTMLResponse:
    j = session.get(Job, job_id.lower())
    if j is None:
        raise NotFound(f"There is no job {job_id}.")
    public = job_public(session, j)
    paid = dict(
        session.exec(
            select(Transfer.credit_account_id, Transfer.amount_wei).where(
                Transfer.job_id == j.id, Transfer.kind == TransferKind.PAY
            )
        ).all()
    )
    epoch_cell = link(path("epochs", j.epoch), j.epoch) if j.epoch else "not in an epoch yet"
    summary = facts(
        [
            ("status", badge(j.status, DECIDED.get(j.status))),
            ("model", join((model_name(ctx, j.model_hash), " ", short(j.model_hash)))),
            ("client", link(path("clients", j.client), j.client)),
            ("rows", j.rows),
            ("price", tokens(j.price_wei)),
            ("voucher (cumulative)", tokens(j.voucher_cumulative_wei)),
            ("epoch", epoch_cell),
            ("submitted", when(j.created_at)),
            ("decided", when(j.decided_at)),
            ("consensus result", tag("code", j.result_hash or "—", id="consensus")),
            ("consensus fingerprint", short(j.fingerprint, 18)),
            ("failure", j.failure or "—"),
        ],
        id_="job",
    )
    rows = [
        (
            short(v.worker, 12),
            link(path("contributors", v.contributor), short(v.contributor, 12)),
            badge(
                "consensus" if v.result_hash == j.result_hash else "other",
                v.result_hash == j.result_hash if j.status == JobStatus.ACCEPTED else None,
            ),
            short(v.result_hash, 12),
            fingerprint_text(v.fingerprint_info),
            tokens(int(paid.get(contributor_account(v.contributor), 0))),
            short(v.signature, 12),
        )
        for v in public.attestations
    ]
    headers = ["worker", "contributor", "vote", "result", "fingerprint", "paid", "attestation"]
    votes = table(headers, rows, id_="votes")
    return page(f"Job {j.id}", section("Summary", summary), section("Votes", votes))


def fingerprint_text(info: dict[str, object]) -> str:
    """A vote's fingerprint as a worker sent it (untrusted: escaped by the table)."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(info.items())) or "—"
