"""Pages from Jinja2 templates with autoescaping on (DICOM header text is always shown as plain text).

Every page is sent with headers that keep it self-contained and unframed: a Content-Security-Policy that
allows nothing but this origin (no script at all), no referrer, no caching.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

#: The navigation bar: (path, label).
NAV = (
    ("/console", "Overview"),
    ("/console/peers", "Peers"),
    ("/console/routing", "Routing"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/models", "Models"),
    ("/console/audit", "Audit log"),
    ("/console/config", "Configuration"),
)


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The console's template environment (built on first use)."""
    env = Environment(
        loader=PackageLoader("dicom_node.api.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["size"] = _size
    env.filters["as_json"] = _as_json
    return env


def page(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` as a self-contained HTML response."""
    context.setdefault("nav", NAV)
    context.setdefault("active", "")
    context.setdefault("identity", None)
    context.setdefault("csrf", "")
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
