"""Screenshot the federation dashboard with headless Chromium (Debian ``chromium``), no network needed.

``python scripts/screenshot_dashboard.py [--out docs/img/federation_dashboard.png]`` starts a federation
server on a free loopback port with a fresh data folder, lets two sites send updates (some accepted, one
rejected) and usage statistics, then loads ``/dashboard`` in Chromium and writes the PNG.

The helpers (:func:`chromium`, :func:`populate`) are used by tests/federation/test_dashboard_browser.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_binary() -> str | None:
    """The Chromium executable, or None when not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(
    url: str,
    *,
    screenshot: Path | None = None,
    dump_dom: bool = False,
    window: tuple[int, int] = (1400, 2200),
    timeout: float = 120.0,
) -> str:
    """Load ``url`` in headless Chromium; write a screenshot and/or return the rendered DOM."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="laurel-chromium-") as profile:
        args = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            args.append(f"--screenshot={screenshot}")
        if dump_dom:
            args.append("--dump-dom")
        args.append(url)
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"chromium exited {done.returncode}: {err}")
    if screenshot is not None and not screenshot.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout.decode(errors="replace")


def _noisy(weights: list[np.ndarray], scale: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(w * (1.0 + scale * rng.standard_normal(w.shape))).astype(w.dtype) for w in weights]


def populate(server: Any, base: Any, *, updates: int = 6) -> None:
    """A small history: two sites send updates (one of them broken, hence rejected) and usage statistics."""
    from federation.client import FederationClient

    clients = [
        FederationClient(server.url, server.state.keys.add_site(name)[1], server.state.server_key.public_key)
        for name in ("hospital-a", "hospital-b")
    ]
    rng = np.random.default_rng(7)
    for i in range(updates):
        client = clients[i % 2]
        version = client.latest_version(base.name)
        assert version is not None
        pkg = server.state.processor.package(base.name, version)
        weights = _noisy(pkg.weights, 0.002, seed=i)
        if i == updates // 2:  # a broken update: its output layer votes background everywhere
            weights[pkg.weight_names.index("head_conv/bias")][0] += 1000.0
        uid = client.upload_update(base.name, version, weights, n_slices=int(rng.integers(5, 20)))
        client.wait_for_update(uid, timeout=600, poll=0.1)
        for _ in range(3):
            client.post_stats(base.name, version, float(np.clip(rng.normal(0.82, 0.06), 0, 1)), n_slices=12)


def main() -> None:
    """Build a server with a short history and screenshot its dashboard."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "federation_dashboard.png")
    parser.add_argument("--updates", type=int, default=6)
    args = parser.parse_args()

    from federation.server.app import BackgroundServer
    from federation.server.config import FederationConfig
    from models.zoo import load_default

    base = load_default("leg")
    with tempfile.TemporaryDirectory(prefix="laurel-fed-") as tmp:
        cfg = FederationConfig.load(
            None,
            server={"data_dir": tmp, "port": 0},
            validation={"default_subjects": 1, "default_slices": 6},
            models=[],
        )
        server = BackgroundServer(cfg, host="127.0.0.1", port=0)
        server.state.processor.publish_initial(base.name, base)
        server.start()
        try:
            populate(server, base, updates=args.updates)
            chromium(f"{server.url}/dashboard", screenshot=args.out)
        finally:
            server.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
