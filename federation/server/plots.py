"""Small server-side SVG charts for the dashboard (no JavaScript, no CDN, no matplotlib).

Each function returns an ``<svg>`` element as a string; every text that reaches it is escaped here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2")
ACCEPTED_COLOUR, REJECTED_COLOUR, FAILED_COLOUR = "#059669", "#dc2626", "#6b7280"


@dataclass
class Series:
    """A named sequence of (x, y) points; x may be numbers or datetimes."""

    name: str
    points: list[tuple[float | dt.datetime, float]]
    colour: str = PALETTE[0]
    line: bool = True
    marker: str = "circle"  # circle | cross
    tooltips: list[str] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _num(x: float | dt.datetime) -> float:
    return x.timestamp() if isinstance(x, dt.datetime) else float(x)


def _fmt_x(value: float, is_time: bool, span: float) -> str:
    if not is_time:
        return f"{value:g}"
    when = dt.datetime.fromtimestamp(value, dt.UTC)
    return when.strftime("%H:%M:%S" if span < 2 * 86400 else "%Y-%m-%d")


def chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    hlines: Sequence[tuple[float, str]] = (),
    y_range: tuple[float, float] | None = None,
    y_clamp: tuple[float, float] | None = (0.0, 1.0),
    width: int = 640,
    height: int = 300,
    integer_x: bool = False,
) -> str:
    """A line/scatter chart with axes, grid, optional horizontal reference lines and a legend.

    The y axis spans the data (and reference lines) with a margin, kept within ``y_clamp`` (Dice: 0..1).
    """
    left, right, top, bottom = 64, 16, 44, 48
    pw, ph = width - left - right, height - top - bottom
    pts = [(_num(x), y) for s in series for x, y in s.points]
    is_time = any(isinstance(x, dt.datetime) for s in series for x, _ in s.points)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" class="ct">{escape(title)}</text>',
    ]
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">no data yet</text>')
        out.append("</svg>")
        return "".join(out)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is None:
        ref = [y for y, _ in hlines]
        y0, y1 = min(ys + ref), max(ys + ref)
        pad = max(0.01, (y1 - y0) * 0.1)
        y0, y1 = y0 - pad, y1 + pad
        if y_clamp is not None:
            y0, y1 = max(y_clamp[0], y0), min(y_clamp[1], y1)
    else:
        y0, y1 = y_range
    if y1 == y0:
        y1 = y0 + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>')
    for t in nice_ticks(y0, y1):
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>')
    xticks = nice_ticks(x0, x1, 6)
    if integer_x:
        xticks = [t for t in xticks if float(t).is_integer()] or [round(x0), round(x1)]
    previous = ""
    for t in xticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" class="grid"/>')
        label = escape(_fmt_x(t, is_time, x1 - x0))
        if label != previous:  # short time spans: one label per distinct second
            out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{label}</text>')
        previous = label
    for value, label in hlines:
        if y0 <= value <= y1:
            y = sy(value)
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="ref"/>')
            out.append(
                f'<text x="{left + pw - 4}" y="{y - 4:.1f}" text-anchor="end" class="reflabel">{escape(label)}</text>'
            )
    for s in series:
        coords = [(sx(_num(x)), sy(y)) for x, y in s.points]
        if s.line and len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        for i, (x, y) in enumerate(coords):
            tip = f"<title>{escape(s.tooltips[i])}</title>" if i < len(s.tooltips) else ""
            if s.marker == "cross":
                out.append(
                    f'<path d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}'
                    f'L{x + 4:.1f},{y - 4:.1f}" stroke="{s.colour}" stroke-width="2">{tip}</path>'
                )
            else:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{s.colour}">{tip}</circle>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">{escape(x_label)}</text>')
    out.append(
        f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle" '
        f'class="axis">{escape(y_label)}</text>'
    )
    lx = left
    for s in series:
        out.append(f'<rect x="{lx}" y="{top - 17}" width="10" height="10" fill="{s.colour}"/>')
        out.append(f'<text x="{lx + 14}" y="{top - 8}" class="legend">{escape(s.name)}</text>')
        lx += 22 + 7 * len(s.name)
    out.append("</svg>")
    return "".join(out)


def histogram(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    x_label: str,
    lo: float = 0.0,
    hi: float = 1.0,
    bins: int = 20,
    width: int = 640,
    height: int = 260,
) -> str:
    """Side-by-side histograms (one colour per group) of values in [lo, hi]."""
    left, right, top, bottom = 56, 16, 44, 48
    pw, ph = width - left - right, height - top - bottom
    counts: list[list[int]] = []
    for _, values in groups:
        c = [0] * bins
        for v in values:
            i = min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))
            c[i] += 1
        counts.append(c)
    peak = max((max(c) for c in counts if c), default=0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" class="ct">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>',
    ]
    if peak == 0:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">no reports yet</text>')
        out.append("</svg>")
        return "".join(out)
    for t in nice_ticks(0, peak, 4):
        if t != int(t):
            continue
        y = top + ph - t / peak * ph
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{int(t)}</text>')
    bw = pw / bins
    gw = bw / max(1, len(groups))
    for g, c in enumerate(counts):
        colour = PALETTE[g % len(PALETTE)]
        for i, n in enumerate(c):
            if n:
                h = n / peak * ph
                x = left + i * bw + g * gw
                out.append(
                    f'<rect x="{x + 1:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, gw - 2):.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{escape(groups[g][0])}: {n}</title></rect>'
                )
    for t in nice_ticks(lo, hi, 5):
        x = left + (t - lo) / (hi - lo) * pw
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" class="axis">{escape(x_label)}</text>')
    lx = left
    for g, (name, values) in enumerate(groups):
        label = f"{name} (n={len(values)})"
        out.append(f'<rect x="{lx}" y="{top - 17}" width="10" height="10" fill="{PALETTE[g % len(PALETTE)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{top - 8}" class="legend">{escape(label)}</text>')
        lx += 22 + 7 * len(label)
    out.append("</svg>")
    return "".join(out)
