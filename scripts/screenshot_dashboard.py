"""Screenshot the federation dashboard with headless Chromium (Debian ``chromium``), no network needed.

``python scripts/screenshot_dashboard.py [--out docs/img/federation_dashboard.png]`` starts a federation
server on a free loopback port with a fresh data folder (reference set: one PD and one T1 phantom), lets two
sites learn from their T1 phantoms and send the updates (one deliberately broken, hence rejected) and usage
statistics, then loads ``/dashboard`` in Chromium and writes the PNG.

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


def populate(server: Any, base: Any, *, updates: int = 6, learn: bool = False) -> None:
    """A short history from two sites: updates (one of them broken, hence rejected) and usage statistics.

    With ``learn`` each update is a real learning step on the site's own T1 phantom (as a node does after
    an approval; seconds each); otherwise the current weights with small noise (fast, for tests).
    """
    import dataclasses

    from federation.client import FederationClient
    from models.metrics import dice
    from models.phantom import cohort, generate

    sites = {
        name: FederationClient(server.url, server.state.keys.add_site(name)[1], server.state.server_key.public_key)
        for name in ("hospital-a", "hospital-b")
    }
    cohorts = {"hospital-a": "site_a_t1_leg", "hospital-b": "site_b_t1_leg"}
    rng = np.random.default_rng(7)
    for i in range(updates):
        name = list(sites)[i % 2]
        client = sites[name]
        version = client.latest_version(base.name)
        assert version is not None
        pkg = server.state.processor.package(base.name, version)
        local = float(np.clip(rng.normal(0.82, 0.06), 0, 1))
        n_slices = int(rng.integers(5, 20))
        if learn:
            spec = cohort(cohorts[name], i // 2 + 1)[-1]
            ph = generate(dataclasses.replace(spec, n_slices=6))
            local = dice(pkg.apply(ph.image, ph.spacing), ph.labels, [lab["value"] for lab in pkg.labels])["overall"]
            weights, n_slices = pkg.learn(ph.image, ph.labels, ph.spacing).weights, 6
        else:
            weights = _noisy(pkg.weights, 0.002, seed=i)
        if i == updates // 2:  # a broken update: its output layer votes background everywhere
            weights[pkg.weight_names.index("head_conv/bias")][0] += 1000.0
        uid = client.upload_update(base.name, version, weights, n_slices=n_slices, local_dice=local)
        client.wait_for_update(uid, timeout=600, poll=0.1)
        client.post_stats(base.name, version, local, n_slices=n_slices)
        if not learn:  # without learning there is no draft to measure: plausible numbers to draw
            for _ in range(2):
                client.post_stats(base.name, version, float(np.clip(rng.normal(0.82, 0.06), 0, 1)), n_slices=12)


def main() -> None:
    """Build a server with a short history and screenshot its dashboard."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "federation_dashboard.png")
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--no-learn", action="store_true", help="perturbed weights instead of learning steps")
    args = parser.parse_args()

    from federation.server.app import BackgroundServer
    from federation.server.config import FederationConfig
    from models.zoo import load_default

    base = load_default("leg")
    with tempfile.TemporaryDirectory(prefix="laurel-fed-") as tmp:
        cfg = FederationConfig.load(
            None,
            server={"data_dir": tmp, "port": 0},
            validation={
                "default_subjects": 2,
                "default_slices": 6,
                "default_contrasts": ["pd", "t1"],
                "tolerance": 0.05,
            },
            models=[],
        )
        server = BackgroundServer(cfg, host="127.0.0.1", port=0)
        server.state.processor.publish_initial(base.name, base)
        server.start()
        try:
            populate(server, base, updates=args.updates, learn=not args.no_learn)
            chromium(f"{server.url}/dashboard", screenshot=args.out, window=(1400, 1900))
        finally:
            server.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
