"""Screenshots of the review station for the docs (docs/img/review_*.png), rendered offscreen.

By default a temporary node runs in this process (the shipped thigh model, API on a free port) and receives
SYNTHETIC two-thigh phantom studies (24 muscles) over DICOM; the station connects to it, the worklist is
grabbed and the oldest study pending review is opened from it. With ``--node URL`` (token in LAUREL_TOKEN) a
running node is used instead; with ``--offline`` a thigh phantom is opened from local files. Then the active
muscle is chosen with the keyboard, a correction is made with the real tools, and the window is grabbed at
every ``--sizes`` (1920×1080 and 1366×768 by default), plus a zoomed view, the reformats with the
differences to the draft, and the statistics dialog. Runs without a display (QT_QPA_PLATFORM=offscreen).

Usage: ``.venv/bin/python scripts/screenshot_review.py [--out docs/img] [--seed 3] [--node URL | --offline]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PyQt5.QtWidgets import QWidget

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGION = "thigh"


def phantom(seed: int, n_slices: int = 16, matrix: int = 320):  # -> models.phantom.Phantom
    """A SYNTHETIC two-thigh phantom (24 muscles)."""
    from models.phantom import PhantomSpec, generate

    return generate(PhantomSpec(region=REGION, contrast="pd", seed=seed, n_slices=n_slices, matrix=matrix))


def write_phantom(folder: Path, seed: int) -> tuple[Path, Path]:
    """The phantom's image as .npy and its labels as the phantom's .npz (keys, spacing)."""
    from models.phantom import write_labels

    ph = phantom(seed)
    vol = folder / "phantom_volume.npy"
    np.save(vol, ph.image.astype(np.float32), allow_pickle=False)
    return vol, write_labels(ph, folder / "phantom_labels.npz")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(port: int, files: list[Path]) -> None:
    """C-STORE the files to the node as the modality (pynetdicom)."""
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="LAUREL")
    if not assoc.is_established:
        raise SystemExit("the temporary node refused the association")
    try:
        for f in files:
            status = assoc.send_c_store(dcmread(f))
            if getattr(status, "Status", None) != 0:
                raise SystemExit(f"the temporary node did not store {f.name}: {status}")
    finally:
        assoc.release()


@contextlib.contextmanager
def temporary_node(folder: Path, seeds: list[int]) -> Iterator[tuple[str, str]]:
    """A whole node with the thigh model holding one SYNTHETIC study per seed pending review: (url, token)."""
    import requests

    from dicom_node.core.config import NodeConfig
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token
    from dicom_node.process.node import build_node
    from models.phantom import write_series

    api_port = _free_port()
    settings = {
        "node": {"ae_title": "LAUREL", "host": "127.0.0.1", "port": _free_port(),
                 "storage_dir": str(folder / "node"), "settle_seconds": 1.0, "completion_scan_seconds": 0.2},
        "peers": [{"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}],
        "routing": [{"model": REGION, "match": {"SeriesDescription": f"(?i){REGION}"}}],
        "api": {"enabled": True, "host": "127.0.0.1", "port": api_port},
        "jobs": {"workers": 1, "poll_seconds": 0.05},
    }  # fmt: skip
    node = build_node(NodeConfig.load(None, **settings))
    with session_scope(node.engine) as s:
        token = create_token(s, "Dr Screenshot")
    node.start()
    url = f"http://127.0.0.1:{api_port}"
    try:
        for seed in seeds:
            _send(node.port, write_series(phantom(seed), folder / f"dicom{seed}"))
            print(f"sent the SYNTHETIC thigh phantom {seed}")
        deadline = time.monotonic() + 900
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            rows = requests.get(f"{url}/api/v1/studies", headers=headers, timeout=30).json()["studies"]
            if sum(r["state"] == "PENDING_REVIEW" for r in rows) == len(seeds):
                break
            if any(r["state"] == "FAILED" for r in rows) or time.monotonic() > deadline:
                raise SystemExit(f"the phantoms did not reach PENDING_REVIEW: {[r['state'] for r in rows]}")
            time.sleep(0.5)  # polling the node, with a deadline
        yield url, token
    finally:
        node.stop()


def grab(widget: QWidget, target: Path) -> None:
    """Save a widget's pixels as PNG."""
    if not widget.grab().save(str(target)):
        raise SystemExit(f"could not write {target}")
    print(f"wrote {target}")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``1920x1080,1366x768`` → [(1920, 1080), (1366, 768)]."""
    out = []
    for part in text.split(","):
        w, h = part.lower().split("x")
        out.append((int(w), int(h)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--seed", type=int, default=3)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--node", help="a running node's API URL (token in LAUREL_TOKEN)")
    where.add_argument("--offline", action="store_true", help="open a phantom from local files (no node)")
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("1920x1080,1366x768"),
        help="window sizes to grab; the first also gets the zoom, reformats and statistics",
    )
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.node or args.offline:
            shoot(args, args.node, os.environ.get("LAUREL_TOKEN"), Path(tmp))
        else:
            with temporary_node(Path(tmp), [args.seed, args.seed + 1, args.seed + 2]) as (url, token):
                shoot(args, url, token, Path(tmp))


def shoot(args: argparse.Namespace, url: str | None, token: str | None, tmp: Path) -> None:
    """Drive the station and grab the pictures."""
    from PyQt5.QtCore import QEvent, QPointF, Qt
    from PyQt5.QtGui import QMouseEvent
    from PyQt5.QtWidgets import QApplication

    from review_station.client import NodeClient
    from review_station.main_window import MainWindow
    from review_station.recovery import RecoveryStore

    app = QApplication.instance() or QApplication(sys.argv[:1])

    def settle(until: Callable[[], bool] = lambda: True, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            app.processEvents()
            if until():
                break
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the review station")
            time.sleep(0.02)
        for _ in range(5):
            app.processEvents()

    (width, height), *others = args.sizes
    w = MainWindow(NodeClient(url, token) if url else None, recovery=RecoveryStore(tmp / "kept"))
    w.autosave_timer.stop()  # the pictures show a correction not yet saved
    w.resize(width, height)
    w.show()
    if url:
        w.start()
        settle(lambda: w.worklist.table.rowCount() > 0 or w.last_error is not None)
        if w.last_error is not None:
            raise SystemExit(f"the node: {w.last_error.text()}")
        w.worklist.table.selectRow(0)
        settle()
        grab(w, args.out / "review_worklist.png")
        w.open_study(w.worklist.selected_id() or w.worklist.studies[0].id)
        settle(lambda: (w.review.current is not None and not w.runner.busy) or w.last_error is not None)
        if w.last_error is not None:
            raise SystemExit(f"the node: {w.last_error.text()}")
    else:
        vol, labels = write_phantom(tmp, args.seed)
        w.open_local(vol, labels)
        settle()
    page, c = w.review, w.review.canvas
    s = page.current.session
    c.set_slice(s.n_slices // 2)
    values, counts = np.unique(s.labels[c.z][s.labels[c.z] > 0], return_counts=True)
    active = int(values[np.argmax(counts)])
    page.select_nth_muscle(page.panel.values.index(active) if active in page.panel.values else 0)
    page.panel.opacity_slider.setValue(45)
    page.acts["grow"].trigger()  # a correction with the real tools; the brush outline hovers over it
    y, x = (int(v) for v in np.argwhere(s.labels[c.z] == active).mean(axis=0))
    c.set_radius(6)
    pos = c.image_to_widget(y, x)
    hover = QMouseEvent(QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton, Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier)  # fmt: skip
    app.sendEvent(c, hover)
    settle()
    grab(w, args.out / "review_main.png")
    for ow, oh in others:
        w.resize(ow, oh)
        settle()
        c.fit()
        app.sendEvent(c, QMouseEvent(QEvent.Type.MouseMove, c.image_to_widget(y, x), Qt.MouseButton.NoButton,
                                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))  # fmt: skip
        settle()
        grab(w, args.out / f"review_main_{ow}x{oh}.png")
        if url:
            w.show_worklist()
            settle()
            grab(w, args.out / f"review_worklist_{ow}x{oh}.png")
            w.show_review()
    w.resize(width, height)
    settle()
    c.fit()
    s.begin_stroke(c.z, (y, x - 12), value=active, radius=3, erase=True)  # a correction that shows
    s.stroke_to((y + 8, x + 12))
    page.after_edit(s.end_stroke())
    page.acts["reformats"].setChecked(True)
    if page.acts["show_difference"].isEnabled():
        page.acts["show_difference"].setChecked(True)
        page.panel.tabs.setCurrentIndex(page.panel.tabs.count() - 1)  # Review: Dice per muscle
    settle()
    c.fit()
    app.sendEvent(c, QMouseEvent(QEvent.Type.MouseMove, c.image_to_widget(y, x), Qt.MouseButton.NoButton,
                                 Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))  # fmt: skip
    settle()
    grab(w, args.out / "review_quality.png")
    page.acts["reformats"].setChecked(False)
    page.acts["show_difference"].setChecked(False)
    page.panel.tabs.setCurrentIndex(0)
    settle()
    c.fit()
    c.zoom_at(2.5, QPointF(c.image_to_widget(y, x)))
    settle()
    grab(c, args.out / "review_zoom.png")
    dlg = w.show_statistics()
    assert dlg is not None
    settle()
    grab(dlg, args.out / "review_statistics.png")
    dlg.close()
    for sd in page.series:
        sd.session.mark_saved()  # nothing to save or ask about on close
    w.close()


if __name__ == "__main__":
    main()
