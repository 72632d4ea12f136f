"""Charts as inline SVG drawn on the server: no script, nothing fetched. Each mark carries
its figure (``data-label``, ``data-value``: an int exactly, wei included) and a tooltip, so a
test or a screen reader reads the numbers without measuring pixels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from api.explorer.html import Html, join, tag

WIDTH, HEIGHT = 360, 220
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 28, 40  # margins: value labels left, x labels below
TICKS_MAX = 12  # up to this many points each is labelled on the x axis, else the ends only

Point = tuple[str, float]  # (label, value)
Show = Callable[[float], str]


def _plain(value: float) -> str:
    return f"{value:,.4g}"


def _exact(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _frame(
    title: str, id_: str, marks: Html, top_label: str, ticks: list[tuple[float, str]], x_title: str
) -> Html:
    """The chart's box: title, axes, the top of the y axis, x labels and the x axis's name."""
    x0, y0, x1 = LEFT, HEIGHT - BOTTOM, WIDTH - RIGHT
    parts = [
        Html(f'<line class="axis" x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}"/>'),
        Html(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>'),
        tag("text", title, x=8, y=16, class_="title"),
        tag("text", top_label, x=x0 - 4, y=TOP + 4, text_anchor="end"),
        tag("text", "0", x=x0 - 4, y=y0 + 4, text_anchor="end"),
        tag("text", x_title, x=(x0 + x1) // 2, y=HEIGHT - 6, text_anchor="middle"),
    ]
    parts += [tag("text", text, x=f"{x:.1f}", y=y0 + 14, text_anchor="middle") for x, text in ticks]
    if not ticks:
        parts.append(tag("text", "no data yet", x=(x0 + x1) // 2, y=(TOP + y0) // 2))
    svg = tag(
        "svg",
        join((tag("title", title), *parts, marks)),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        width=WIDTH,
        height=HEIGHT,
        role="img",
        aria_label=title,
    )
    return tag("figure", svg, class_="chart", id=id_)


def _ticks(points: Sequence[Point], xs: list[float]) -> list[tuple[float, str]]:
    every = list(zip(xs, (label for label, _ in points), strict=True))
    return every if len(every) <= TICKS_MAX else [every[0], every[-1]]


def _top(points: Sequence[Point], fixed_max: float | None) -> float:
    top = fixed_max if fixed_max is not None else max((v for _, v in points), default=0)
    return top if top > 0 else 1


@dataclass(frozen=True)
class _Plot:
    top: float  # the value at the top of the plot
    height: float
    slot: float  # the width given to each point
    xs: list[float]  # each point's centre


def _plot(points: Sequence[Point], fixed_max: float | None) -> _Plot:
    slot = (WIDTH - LEFT - RIGHT) / max(len(points), 1)
    xs = [LEFT + (i + 0.5) * slot for i in range(len(points))]
    return _Plot(_top(points, fixed_max), HEIGHT - TOP - BOTTOM, slot, xs)


def bar_chart(
    title: str, points: Sequence[Point], *, id_: str, x_title: str, show: Show = _plain
) -> Html:
    """One ``rect.bar`` per point, in order."""
    p = _plot(points, None)
    top, plot_h, slot = p.top, p.height, p.slot
    bars = []
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        bars.append(
            tag(
                "rect",
                tag("title", f"{x_title} {label}: {show(value)}"),
                class_="bar",
                x=f"{LEFT + i * slot + slot * 0.15:.1f}",
                y=f"{TOP + plot_h - h:.1f}",
                width=f"{max(slot * 0.7, 1):.1f}",
                height=f"{h:.1f}",
                data_label=label,
                data_value=_exact(value),
            )
        )
    top_label = show(top) if points else ""
    return _frame(title, id_, join(bars), top_label, _ticks(points, p.xs), x_title)


def line_chart(
    title: str,
    points: Sequence[Point],
    *,
    id_: str,
    x_title: str,
    fixed_max: float | None = None,
    show: Show = _plain,
) -> Html:
    """A polyline with one ``circle.point`` per point, in order."""
    p = _plot(points, fixed_max)
    top, xs = p.top, p.xs
    ys = [TOP + p.height * (1 - v / top) for _, v in points]
    line = tag(
        "polyline",
        "",
        class_="line",
        points=" ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True)),
    )
    dots = [
        tag(
            "circle",
            tag("title", f"{x_title} {label}: {show(value)}"),
            class_="point",
            cx=f"{x:.1f}",
            cy=f"{y:.1f}",
            r=3.5,
            data_label=label,
            data_value=_exact(value),
        )
        for (label, value), x, y in zip(points, xs, ys, strict=True)
    ]
    top_label = show(top) if points else ""
    return _frame(title, id_, join((line, *dots)), top_label, _ticks(points, xs), x_title)


def charts(*figures: Html) -> Html:
    return tag("div", join(figures), class_="charts")
