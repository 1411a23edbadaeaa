"""The dashboard page: versions over time with their validation Dice, updates, usage statistics.

Rendered on the server from ``templates/dashboard.html`` with inline SVG charts (:mod:`plots`); no script,
no external resource, so it works offline and in a headless browser. Aggregates only: no keys, no patient
data; sites appear as pseudonymous ids unless ``dashboard.show_site_names: true``.
"""

from __future__ import annotations

import datetime as dt
import statistics
from html import escape
from importlib import resources
from string import Template

from federation.server import plots
from federation.server.deps import ServerState
from federation.server.registry import ACCEPTED, FAILED, QUEUED, REJECTED, VALIDATING, UpdateInfo


def _template() -> Template:
    text = resources.files("federation.server").joinpath("templates/dashboard.html").read_text("utf-8")
    return Template(text)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _when(value: dt.datetime | None) -> str:
    return "–" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _site(state: ServerState, u: UpdateInfo) -> str:
    return state.labels.label(u.site)


def _model_section(state: ServerState, name: str) -> str:
    reg, threshold = state.registry, state.config.validation.threshold
    versions = reg.versions(name)
    updates = reg.list_updates(model=name, limit=1000)
    counts = {s: sum(1 for u in updates if u.state == s) for s in (ACCEPTED, REJECTED, FAILED, QUEUED, VALIDATING)}
    latest = versions[-1] if versions else None
    by_uid = {u.uid: u for u in updates}
    tips = []
    for v in versions:
        origin = (
            "zoo"
            if not v.merged_updates
            else ", ".join(
                f"update {uid[:8]}" + (f" ({_site(state, by_uid[uid])})" if uid in by_uid else "")
                for uid in v.merged_updates
            )
        )
        tips.append(f"version {v.version}: Dice {v.dice:.4f} — {origin} — {_when(v.created_at)}")
    dice_chart = plots.chart(
        [plots.Series(name, [(v.version, v.dice) for v in versions], tooltips=tips)],
        title=f"{name}: validation Dice of each published version",
        x_label="version",
        y_label="Dice (reference set)",
        hlines=[(threshold, f"threshold {threshold:.2f}")],
        integer_x=True,
    )
    time_chart = plots.chart(
        [plots.Series(name, [(v.created_at, v.dice) for v in versions], tooltips=tips)],
        title=f"{name}: versions over time",
        x_label="published (UTC)",
        y_label="Dice",
        hlines=[(threshold, f"threshold {threshold:.2f}")],
    )
    series = []
    for st, colour, marker in (
        (ACCEPTED, plots.ACCEPTED_COLOUR, "circle"),
        (REJECTED, plots.REJECTED_COLOUR, "cross"),
    ):
        chosen = [u for u in reversed(updates) if u.state == st and u.candidate_dice is not None]
        series.append(
            plots.Series(
                f"{st.lower()} ({counts[st]})",
                [
                    (u.finished_at or u.created_at or dt.datetime.now(dt.UTC), float(u.candidate_dice or 0))
                    for u in chosen
                ],
                colour=colour,
                line=False,
                marker=marker,
                tooltips=[
                    f"{_site(state, u)}: candidate {_fmt(u.candidate_dice, 4)}, "
                    f"merged {_fmt(u.merged_dice, 4)}"
                    + (f" → version {u.version}" if u.version is not None else f" — {u.reason or ''}")
                    for u in chosen
                ],
            )
        )
    updates_chart = plots.chart(
        series,
        title=f"{name}: uploaded updates (candidate Dice)",
        x_label="processed (UTC)",
        y_label="candidate Dice",
        hlines=[(threshold, f"threshold {threshold:.2f}")],
    )
    cards = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v {cls}">{escape(v)}</div></div>'
        for k, v, cls in (
            ("latest version", "–" if latest is None else str(latest.version), ""),
            ("validation Dice", _fmt(None if latest is None else latest.dice, 4), ""),
            ("accepted", str(counts[ACCEPTED]), "ok"),
            ("rejected", str(counts[REJECTED]), "bad"),
            ("failed", str(counts[FAILED]), "muted"),
            ("waiting", str(counts[QUEUED] + counts[VALIDATING]), ""),
        )
    )
    return (
        f'<section class="model"><h2>{escape(name)} <span class="region">'
        f"{escape(reg.model_region(name))}</span></h2>"
        f'<div class="cards">{cards}</div>'
        f'<div class="charts">{dice_chart}{time_chart}{updates_chart}</div></section>'
    )


def _usage_section(state: ServerState) -> str:
    usage = state.registry.list_usage(limit=5000)
    models = sorted({u.model for u in usage})
    groups = [(m, [u.dice for u in usage if u.model == m]) for m in models]
    hist = plots.histogram(groups, title="usage: Dice of drafts against approved results", x_label="Dice")
    series = [
        plots.Series(
            m,
            [(u.created_at, u.dice) for u in usage if u.model == m],
            colour=plots.PALETTE[i % len(plots.PALETTE)],
            line=False,
        )
        for i, m in enumerate(models)
    ]
    over_time = plots.chart(
        series, title="usage reports over time", x_label="reported (UTC)", y_label="Dice", y_range=(0.0, 1.0)
    )
    rows = []
    per_site: dict[tuple[str, str], list[float]] = {}
    for u in usage:
        site = state.labels.label(u.site)
        per_site.setdefault((site, u.model), []).append(u.dice)
    for (site, model), values in sorted(per_site.items()):
        rows.append(
            f"<tr><td>{escape(site)}</td><td>{escape(model)}</td><td>{len(values)}</td>"
            f"<td>{statistics.median(values):.3f}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>site</th><th>model</th><th>reports</th><th>median Dice</th></tr></thead>"
        f"<tbody>{''.join(rows) or '<tr><td colspan=4>no reports yet</td></tr>'}</tbody></table>"
    )
    return f'<div class="charts">{hist}{over_time}</div>{table}'


def _updates_table(state: ServerState) -> str:
    rows = []
    for u in state.registry.list_updates(limit=30):
        outcome = f"version {u.version}" if u.version is not None else (u.reason or "")
        rows.append(
            f"<tr><td>{_when(u.created_at)}</td><td>{escape(_site(state, u))}</td><td>{escape(u.model)}</td>"
            f'<td>{u.base_version}</td><td><span class="badge {u.state.lower()}">{u.state}</span></td>'
            f"<td>{_fmt(u.candidate_dice)}</td><td>{_fmt(u.merged_dice)}</td>"
            f'<td>{_fmt(u.local_dice)}</td><td class="reason">{escape(outcome)}</td></tr>'
        )
    return (
        "<table><thead><tr><th>uploaded (UTC)</th><th>site</th><th>model</th><th>base</th><th>state</th>"
        "<th>candidate Dice</th><th>merged Dice</th><th>local Dice</th><th>outcome</th></tr></thead>"
        f"<tbody>{''.join(rows) or '<tr><td colspan=9>no updates yet</td></tr>'}</tbody></table>"
    )


def render_dashboard(state: ServerState) -> str:
    """The whole page."""
    cfg = state.config
    models = "".join(_model_section(state, n) for n in state.registry.model_names())
    return _template().substitute(
        generated=escape(_when(dt.datetime.now(dt.UTC))),
        threshold=f"{cfg.validation.threshold:.2f}",
        tolerance=f"{cfg.validation.tolerance:.3f}",
        strategy=escape(cfg.merge.strategy),
        weight=f"{cfg.merge.weight:g}",
        queue_depth=str(state.queue.depth()),
        worker="running" if state.queue.running else "stopped",
        public_key=escape(state.server_key.public_b64()),
        models=models or "<p>No models registered.</p>",
        usage=_usage_section(state),
        updates=_updates_table(state),
    )
