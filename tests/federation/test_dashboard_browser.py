"""The dashboard in a real browser: headless Chromium renders the page the server serves, and a screenshot.

Set ``LAUREL_UPDATE_SCREENSHOTS=1`` to also copy the screenshot to docs/img/federation_dashboard.png
(``scripts/screenshot_dashboard.py`` makes the same picture with a longer history).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.server.config import FederationConfig
from scripts.screenshot_dashboard import chromium, chromium_binary, populate
from tests.federation.conftest import ServerFactory

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="Debian chromium is not installed")
REPO = Path(__file__).resolve().parents[2]


def test_dashboard_renders_in_chromium(
    start_server: ServerFactory,
    fed_config: Callable[..., FederationConfig],
    base_package: Any,
    tmp_path: Path,
) -> None:
    import matplotlib.image

    srv = start_server(fed_config())
    populate(srv, base_package, updates=4)
    updates = srv.state.registry.list_updates()
    assert {u.state for u in updates} == {"ACCEPTED", "REJECTED"}

    dom = chromium(f"{srv.url}/dashboard", dump_dom=True)
    assert "<h1>Laurel federation</h1>" in dom
    assert dom.count("<svg") >= 5  # Dice by version, over time, updates, usage histogram, usage over time
    assert all(srv.state.labels.pseudonym(n) in dom for n in ("hospital-a", "hospital-b"))
    assert "hospital-a" not in dom and "hospital-b" not in dom  # names hidden unless dashboard.show_site_names
    assert dom.count('class="badge accepted"') == sum(u.state == "ACCEPTED" for u in updates)
    assert dom.count('class="badge rejected"') == sum(u.state == "REJECTED" for u in updates)
    latest = srv.state.registry.latest("leg")
    assert latest is not None and f"version {latest.version}" in dom

    png = tmp_path / "federation_dashboard.png"
    chromium(f"{srv.url}/dashboard", screenshot=png, window=(1400, 2200))
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (2200, 1400)
    rgb = (pixels[..., :3] * 255).round().astype(int)
    header = np.all(np.abs(rgb - np.array([20, 83, 45])) <= 2, axis=-1)  # the dark green header bar
    assert header[:40].mean() > 0.5
    assert rgb.std() > 20  # charts and tables, not a blank page
    if os.environ.get("LAUREL_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, REPO / "docs" / "img" / "federation_dashboard.png")
