"""The console's charts: inline SVG drawn on the server (the federation dashboard's :mod:`plots`), no script.

Plots where a person would rather look than read: intake rate and queue depth over the last hours, Dice of
each approved draft against its approval over time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.review_tables import SeriesResult
from federation.server.plots import PALETTE, Series, chart


def _counts_range(values: list[float]) -> tuple[float, float]:
    """A y axis for counts: from zero to a little above the largest (at least 1)."""
    return (0.0, max(1.0, max(values, default=0.0) * 1.1))


def intake_chart(points: list[tuple[datetime, float]]) -> Markup:
    """Instances received per minute over the window."""
    data = [] if not any(y for _, y in points) else points
    points_of = [y for _, y in points]
    svg = chart(
        [Series("instances / min", list(data), PALETTE[0])],
        title="Intake rate",
        x_label="time (UTC)",
        y_label="instances per minute",
        y_range=_counts_range(points_of),
        width=620,
        height=260,
    )
    return Markup(svg)  # noqa: S704 - plots.chart escapes every text it draws


def queue_chart(depth: dict[str, list[tuple[datetime, float]]]) -> Markup:
    """Unfinished jobs per kind over the window."""
    series = [
        Series(kind, list(points), PALETTE[i % len(PALETTE)]) for i, (kind, points) in enumerate(sorted(depth.items()))
    ]
    points_of = [y for points in depth.values() for _, y in points]
    svg = chart(
        series,
        title="Queue depth",
        x_label="time (UTC)",
        y_label="jobs not finished",
        y_range=_counts_range(points_of),
        width=620,
        height=260,
    )
    return Markup(svg)  # noqa: S704 - plots.chart escapes every text it draws


def dice_points(session: Session, limit: int = 1000) -> dict[str, list[tuple[datetime, float]]]:
    """Per model, the overall Dice of each approved draft against its approval, by approval time."""
    query = (
        select(SeriesResult.model, SeriesResult.approved_at, SeriesResult.dice)
        .where(SeriesResult.approved_at.is_not(None), SeriesResult.dice.is_not(None))
        .order_by(SeriesResult.approved_at.desc())
        .limit(limit)
    )
    points: dict[str, list[tuple[datetime, float]]] = {}
    for model, approved_at, dice in session.execute(query):
        overall: Any = (dice or {}).get("overall")
        if approved_at is not None and isinstance(overall, int | float):
            points.setdefault(model, []).append((approved_at, float(overall)))
    return {model: sorted(p) for model, p in points.items()}


def dice_chart(points: dict[str, list[tuple[datetime, float]]]) -> Markup:
    """Dice of drafts against approved labels over time, one colour per model."""
    series = [
        Series(
            model,
            list[tuple[float | datetime, float]](p),
            PALETTE[i % len(PALETTE)],
            tooltips=[f"{model}: {y:.3f}" for _, y in p],
        )
        for i, (model, p) in enumerate(sorted(points.items()))
    ]
    svg = chart(
        series,
        title="Dice of the draft against the approved labels",
        x_label="approved at (UTC)",
        y_label="Dice (overall)",
        width=620,
        height=260,
    )
    return Markup(svg)  # noqa: S704 - plots.chart escapes every text it draws
