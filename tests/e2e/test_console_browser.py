"""The console in headless Chromium: every page loads with no request leaving loopback (asserted on the
browser's network log), logged in through a one-time link, with screenshots of each page.

Set ``LAUREL_UPDATE_SCREENSHOTS=1`` to copy the screenshots (palette PNGs) to docs/img/console_*.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
import requests

from tests.e2e.test_console import ROUTING, csrf_of, login
from tests.peers import DcmtkStorescp, free_port, wait_until
from tests.workflow_fixtures import OPERATOR, RunningNode, phantom_series, results_peer, send_files

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (scripts/setup.sh installs it)"),
    pytest.mark.peers,
    pytest.mark.slow,
]
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    # Chromium's own services that would otherwise ask Google about a page's forms or language.
    "--disable-features=AutofillServerCommunication,Translate,OptimizationHints,MediaRouter",
)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def browse(url: str, screenshot: Path, netlog: Path, window: tuple[int, int] = (1440, 900)) -> None:
    """Load ``url`` in a fresh headless Chromium profile, writing a screenshot and the network log."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="laurel-chromium-") as profile:
        args = [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            f"--log-net-log={netlog}",
            f"--screenshot={screenshot}",
            url,
        ]
        done = subprocess.run(args, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0 and screenshot.exists(), done.stderr.decode(errors="replace")[-2000:]


def page_requests(netlog: Path, origin: str) -> list[str]:
    """Every URL the page at ``origin`` made the browser fetch: requests whose network isolation key or
    initiator is the page's site (the browser's own update and account checks carry neither)."""
    log = json.loads(netlog.read_text())
    site = "http://" + urlsplit(origin).hostname  # type: ignore[operator]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if "url" not in params or "network_isolation_key" not in params:
            continue
        if site in params["network_isolation_key"] or params.get("initiator", "").startswith(origin):
            urls.append(str(params["url"]))
    return urls


def leaves_loopback(url: str) -> bool:
    """Whether a requested URL goes anywhere but this host (``data:`` never does)."""
    parts = urlsplit(url)
    return parts.scheme != "data" and parts.hostname not in LOOPBACK


def palette_png(source: Path, target: Path) -> None:
    """A small copy of a screenshot: 256-colour palette, optimised."""
    from PIL import Image

    with Image.open(source) as img:
        img.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


@pytest.fixture
def busy_node(
    filed_node_factory: Callable[..., RunningNode],
    storescp_factory: Callable[..., DcmtkStorescp],
    tmp_path: Path,
) -> Iterator[RunningNode]:
    """A node with real work to show: two phantom leg studies (one approved and exported to a DCMTK archive),
    a dead letter, a live peer and a dead one, each C-ECHOed from the console."""
    archive = storescp_factory(aet="ARCHIVE").start()
    running = filed_node_factory(
        routing=ROUTING,
        peers=[
            {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104},
            results_peer("archive", "ARCHIVE", archive.port),
            # An old scanner that sends to us, switched off: its C-ECHO fails.
            {"name": "old-mr", "ae_title": "OLDMR", "host": "127.0.0.1", "port": free_port()},
        ],
    )
    uids = []
    for seed in (4242, 4343):
        files, _ = phantom_series(tmp_path / f"phantom{seed}", seed)
        send_files(running.node.port, files)
        import pydicom

        uids.append(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID))
    studies = [running.wait_state(uid, {"PENDING_REVIEW"}) for uid in uids]
    assert running.approve(int(studies[0]["id"]), uids[0]).status_code == 200
    running.wait_state(uids[0], {"EXPORTED"})
    running.node.enqueue("export", {"peer": "gone-pacs", "paths": []})
    browser = login(running, running.token)
    csrf = csrf_of(browser.get(running.url + "/console/peers", timeout=30).text)
    for peer in ("archive", "old-mr"):
        assert browser.post(f"{running.url}/console/peers/{peer}/echo", data={"csrf": csrf}, timeout=60).ok
    yield running


def test_every_console_page_loads_in_chromium_without_leaving_loopback(busy_node: RunningNode, tmp_path: Path) -> None:
    from dicom_node.api.console.auth import console_key, login_link_code
    from dicom_node.core.db import Job, JobState, Series, session_scope

    running = busy_node
    key = console_key(running.node.config.node.storage_dir)
    with session_scope(running.node.engine) as s:
        series_id = s.query(Series).order_by(Series.id).first().id  # type: ignore[union-attr]
    wait_until(lambda: _dead_letters(running) > 0, 60, 0.1, "the export to an unknown peer is a dead letter")
    pages: dict[str, str] = {
        "overview": "/console",
        "peers": "/console/peers?echo=" + str(_last_echo_id(running)),
        "routing": f"/console/routing?series={series_id}",
        "dead_letters": "/console/dead-letters",
        "models": "/console/models",
        "audit": "/console/audit",
        "config": "/console/config",
    }
    shots: dict[str, Path] = {}
    for name, path in pages.items():
        with session_scope(running.node.engine) as s:
            code = login_link_code(s, key, OPERATOR)
        url = f"{running.url}/console/login/once?{urlencode({'code': code, 'next': path})}"
        png, netlog = tmp_path / f"console_{name}.png", tmp_path / f"{name}.netlog.json"
        browse(url, png, netlog)
        requested = page_requests(netlog, running.url)
        target = running.url + path
        assert target in requested, (name, requested)  # the one-time link logged in and led to the page
        assert running.url + "/console/static/console.css" in requested, requested
        assert not any("/console/login?" in u for u in requested), requested  # never sent to the login form
        outside = [u for u in requested if leaves_loopback(u)]
        assert outside == [], f"{name} requested beyond loopback: {outside}"
        pixels = _rgb(png)
        assert pixels.shape[:2] == (900, 1440)
        header = np.all(np.abs(pixels - np.array([30, 58, 95])) <= 3, axis=-1)  # the console's dark blue bar
        assert header[:30].mean() > 0.5, name
        assert pixels.std() > 20, name  # tables and charts, not a blank page
        shots[name] = png

    # A used link does not log in again.
    with session_scope(running.node.engine) as s:
        code = login_link_code(s, key, OPERATOR)
    once = f"{running.url}/console/login/once?code={code}"
    assert requests.get(once, timeout=30).url.endswith("/console")
    assert requests.get(once, timeout=30, allow_redirects=False).status_code == 401

    if os.environ.get("LAUREL_UPDATE_SCREENSHOTS") == "1":
        out = REPO / "docs" / "img"
        for name, png in shots.items():
            palette_png(png, out / f"console_{name}.png")
        total = sum((out / f"console_{n}.png").stat().st_size for n in shots)
        assert total < 1_500_000, total
    with session_scope(running.node.engine) as s:
        assert s.query(Job).filter(Job.state == JobState.DEAD).count() >= 1


def _dead_letters(running: RunningNode) -> int:
    from dicom_node.core.db import Job, JobState, session_scope

    with session_scope(running.node.engine) as s:
        return s.query(Job).filter(Job.state == JobState.DEAD).count()


def _last_echo_id(running: RunningNode) -> int:
    from dicom_node.core.db import session_scope
    from dicom_node.core.review_tables import AuditEvent

    with session_scope(running.node.engine) as s:
        event = s.query(AuditEvent).filter(AuditEvent.action == "echo").order_by(AuditEvent.id.desc()).first()
        assert event is not None
        return event.id


def _rgb(png: Path) -> Any:
    import matplotlib.image

    return (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)
