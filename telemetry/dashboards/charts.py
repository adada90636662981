"""Stacked bar charts as inline SVG, drawn on the server.

Amounts stay integer micro-dollars; only pixel positions are fractional (Decimal, rounded to a
tenth of a pixel). Every bar segment carries a <title>, so hovering shows the exact figure
without any script.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from governance.money import format_usd, micros_to_usd

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
)
OTHER_COLOUR = "#bab0ac"
MAX_GROUPS = 8  # the rest is stacked as one "other" segment

WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 72, 12, 12, 30
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_X_LABELS = 12
TICKS = 4


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[int]  # micro-dollars per bucket
    colour: str = OTHER_COLOUR

    @property
    def total(self) -> int:
        return sum(self.values)


@dataclass(frozen=True, slots=True)
class LegendItem:
    label: str
    colour: str
    total: str
    share: int  # whole percent of the chart's total


@dataclass(frozen=True, slots=True)
class Chart:
    svg: SafeString
    legend: list[LegendItem]
    total_micros: int

    @property
    def empty(self) -> bool:
        return self.total_micros == 0


def top_series(groups: dict[str, list[int]], buckets: int) -> list[Series]:
    """The biggest groups by total, coloured, with the rest merged into "other"."""
    ranked = sorted(groups.items(), key=lambda item: (-sum(item[1]), item[0]))
    kept = ranked if len(ranked) <= MAX_GROUPS else ranked[: MAX_GROUPS - 1]
    series = [
        Series(label, values, PALETTE[i % len(PALETTE)]) for i, (label, values) in enumerate(kept)
    ]
    rest = ranked[len(kept) :]
    if rest:
        merged = [sum(values[i] for _, values in rest) for i in range(buckets)]
        series.append(Series(f"other ({len(rest)})", merged, OTHER_COLOUR))
    return series


def nice_step(top: int) -> int:
    """A tick step of 1, 2 or 5 x 10^k micro-dollars giving at most TICKS steps up to `top`."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if step * TICKS >= top:
                return step
        magnitude *= 10


def axis_label(micros: int) -> str:
    usd = micros_to_usd(micros)
    if usd >= 10_000:
        return f"${usd / 1000:,.0f}k"
    if micros % 1_000_000 == 0:
        return f"${usd:,.0f}"
    return format_usd(micros)


def bucket_label(bucket: dt.datetime, granularity: str) -> str:
    if granularity == "hour" and (bucket.hour or bucket.minute):
        return bucket.strftime("%H:%M")
    return f"{bucket:%b} {bucket.day}"


def _px(value: Decimal | int) -> str:
    return f"{Decimal(value):.1f}"


def stacked_bars(
    buckets: Sequence[dt.datetime], series: Sequence[Series], *, granularity: str, title: str
) -> Chart:
    count = max(len(buckets), 1)
    stacks = [sum(s.values[i] for s in series) for i in range(len(buckets))]
    grand_total = sum(stacks)
    step = nice_step(max([*stacks, 10_000]))  # at least a cent, so an empty chart has an axis
    top = -(-max([*stacks, 1]) // step) * step
    slot = Decimal(PLOT_W) / count
    bar = max(slot * Decimal("0.72"), Decimal(1))
    parts: list[SafeString] = [_grid(top, step)]
    for i, bucket in enumerate(buckets):
        x = LEFT + slot * i + (slot - bar) / 2
        when = bucket_label(bucket, granularity)
        parts.append(_column_hover(LEFT + slot * i, slot, when, stacks[i]))
        parts.append(_stack(series, i, x=x, width=bar, top=top, when=when))
    parts.append(_x_labels(buckets, slot, granularity))
    svg = format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'xmlns="http://www.w3.org/2000/svg">'
        "<title>{}</title>{}</svg>",
        WIDTH,
        HEIGHT,
        title,
        title,
        format_html_join("", "{}", ((part,) for part in parts)),
    )
    legend = [
        LegendItem(
            s.label,
            s.colour,
            format_usd(s.total),
            s.total * 100 // grand_total if grand_total else 0,
        )
        for s in series
        if s.total
    ]
    return Chart(svg=svg, legend=legend, total_micros=grand_total)


def _grid(top: int, step: int) -> SafeString:
    lines = []
    for value in range(0, top + 1, step):
        y = TOP + PLOT_H - Decimal(value) * PLOT_H / top
        lines.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                _px(y),
                _px(y),
                LEFT - 8,
                _px(y + 4),
                axis_label(value),
            )
        )
    return format_html_join("", "{}", ((line,) for line in lines))


def _column_hover(x: Decimal, width: Decimal, when: str, total: int) -> SafeString:
    """A transparent full-height rectangle behind the bars: hovering a column shows its total."""
    return format_html(
        '<rect class="hover" x="{}" y="{}" width="{}" height="{}"><title>{}: {} in total</title>'
        "</rect>",
        _px(x),
        TOP,
        _px(width),
        PLOT_H,
        when,
        format_usd(total),
    )


def _stack(
    series: Sequence[Series], index: int, *, x: Decimal, width: Decimal, top: int, when: str
) -> SafeString:
    segments = []
    base = Decimal(TOP + PLOT_H)
    for s in series:
        value = s.values[index]
        if value <= 0:
            continue
        height = Decimal(value) * PLOT_H / top
        base -= height
        segments.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                "<title>{} · {}: {}</title></rect>",
                _px(x),
                _px(base),
                _px(width),
                _px(max(height, Decimal("0.5"))),
                s.colour,
                when,
                s.label,
                format_usd(value),
            )
        )
    return format_html_join("", "{}", ((segment,) for segment in segments))


def _x_labels(buckets: Sequence[dt.datetime], slot: Decimal, granularity: str) -> SafeString:
    every = max(-(-len(buckets) // MAX_X_LABELS), 1)
    labels = [
        format_html(
            '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
            _px(LEFT + slot * i + slot / 2),
            HEIGHT - 10,
            bucket_label(bucket, granularity),
        )
        for i, bucket in enumerate(buckets)
        if i % every == 0
    ]
    return format_html_join("", "{}", ((label,) for label in labels))
