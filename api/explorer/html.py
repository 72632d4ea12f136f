"""HTML for the explorer without a template engine: every value goes through ``esc`` unless
it is already ``Html`` (built here from escaped parts), so untrusted text (an address in a
URL, a failure reason, a fingerprint a worker sent) can never become markup."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from fastapi.responses import HTMLResponse

from inferledger.amounts import format_tokens

Cell = object  # anything: Html passes as is, everything else is escaped


class Html(str):
    """Markup known to be safe: only made by this module's helpers and the chart builders."""

    __slots__ = ()


def esc(value: object) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Cell]) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, content: Cell = "", **attrs: object) -> Html:
    """``<name attrs>content</name>``; attribute names are ours, values are escaped
    (``class_`` for ``class``, ``data_x`` for ``data-x``)."""
    rendered = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None
    )
    return Html(f"<{name}{rendered}>{esc(content)}</{name}>")


def link(href: str, text: Cell) -> Html:
    return tag("a", text, href=href)


def path(*parts: object) -> str:
    """``/explorer/<part>/<part>``, each part percent-encoded."""
    return "/explorer/" + "/".join(quote(str(p), safe="") for p in parts)


def short(value: str | None, keep: int = 10) -> Html:
    """A long hex id shortened for a table, the whole of it in the tooltip."""
    if not value:
        return esc("—")
    text = value if len(value) <= keep + 6 else f"{value[:keep]}…{value[-4:]}"
    return tag("code", text, title=value)


def tokens(wei: int) -> Html:
    """A token amount, exact, with the wei in the tooltip (``data-wei`` for tests)."""
    return tag("span", format_tokens(wei), class_="amount", title=f"{wei} wei", data_wei=wei)


def token_label(wei: float) -> str:
    """A chart's label of an amount in wei."""
    return format_tokens(int(wei))


def when(ts: float | None) -> Html:
    if not ts:
        return esc("—")
    text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return tag("time", text, datetime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)))


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, id_: str) -> Html:
    """A table; with no rows, one row saying so (``tr.empty``)."""
    head = join(tag("th", h) for h in headers)
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    if not body:
        body = tag("tr", tag("td", "none", colspan=len(headers)), class_="empty")
    return tag("table", Html(f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"), id=id_)


def facts(pairs: Iterable[tuple[str, Cell]], *, id_: str) -> Html:
    """A definition list: label, value."""
    return tag("dl", join(join((tag("dt", k), tag("dd", v))) for k, v in pairs), id=id_)


def badge(text: str, good: bool | None) -> Html:
    kind = "neutral" if good is None else "good" if good else "bad"
    return tag("span", text, class_=f"badge {kind}")


def section(title: str, *content: Cell, id_: str | None = None) -> Html:
    return tag("section", join((tag("h2", title), *content)), id=id_)


def row(*content: Cell) -> Html:
    """Side by side while the page is wide enough (a summary and its chart)."""
    return tag("div", join(content), class_="row")


STYLE = """
body{font:15px/1.45 "DejaVu Sans",system-ui,sans-serif;margin:0;color:#1d232b;background:#f5f6f8}
header{background:#1d2b3a;color:#fff;padding:.6em 1.5em;display:flex;gap:2em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:bold}
header form{margin-left:auto}
header input{width:28em;padding:.3em;border:0;border-radius:3px}
main{padding:1em 1.5em;max-width:1200px}
h1{font-size:1.5em;margin:.3em 0 .6em;word-break:break-all}
h2{font-size:1.15em;margin:1.2em 0 .5em}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.2em 1em 1em;
margin-bottom:1em}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#eef1f4}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1.5em;margin:0}
dt{color:#5b6570}dd{margin:0;word-break:break-all}
code{font:13px "DejaVu Sans Mono",monospace}
a{color:#1a5fb4}
.badge{padding:.1em .5em;border-radius:3px;font-size:.9em}
.good{background:#d7f0dc;color:#1c6b2c}.bad{background:#f7d9d9;color:#8a1f1f}
.neutral{background:#e8eaed;color:#3c4650}
.charts{display:flex;flex-wrap:wrap;gap:1em;margin-bottom:1em}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.4em;margin:0}
.chart text{font:11px "DejaVu Sans",sans-serif;fill:#3c4650}
.chart text.title{font-weight:bold;font-size:12px;fill:#1d232b}
.amount{white-space:nowrap}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.row>section{flex:1}
.chart .bar{fill:#3d7cc9}.chart .line{fill:none;stroke:#3d7cc9;stroke-width:2}
.chart .point{fill:#1d4f8c}.chart .axis{stroke:#9aa3ad}
.note{color:#5b6570;font-size:.9em}
"""


# The pages need nothing but their own inline style and data: URLs; should a value ever slip
# past the escaping, no script runs, nothing loads from elsewhere, nothing frames the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page(title: str, *content: Cell, status_code: int = 200) -> HTMLResponse:
    """A whole page: the header (home link, a search box), the title and the content."""
    search = Html(
        '<form action="/explorer/search" method="get" role="search">'
        '<input name="q" placeholder="epoch number, job id, contributor or client address"'
        ' aria-label="search"></form>'
    )
    header = tag("header", join((link("/explorer", "inferledger explorer"), search)))
    body = join((header, tag("main", join((tag("h1", title), *content)))))
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} · inferledger</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status_code, headers=SECURITY_HEADERS)


def not_found(detail: str) -> HTMLResponse:
    return page(
        "Not found",
        tag("p", detail, id="not-found"),
        tag("p", link("/explorer", "Back to the epochs")),
        status_code=404,
    )
