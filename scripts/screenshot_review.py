"""Screenshots of the review station for the docs (docs/img/review_*.png), rendered offscreen.

With ``--node URL`` (token in LAUREL_TOKEN) the station connects to a running node (``laurel demo``, or a test
node), the worklist is grabbed and the first study pending review is opened from it. Without, a SYNTHETIC
phantom leg study (``models.phantom``) is opened through the station's offline path (``laurel review
--open-local VOLUME --labels LABELS``). Then a correction is made with the real tools and the main window,
a zoomed view and the statistics dialog are grabbed. Runs without a display (QT_QPA_PLATFORM=offscreen).

Usage: ``.venv/bin/python scripts/screenshot_review.py [--out docs/img] [--seed 3] [--node URL]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PyQt5.QtWidgets import QWidget

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_phantom(folder: Path, seed: int) -> tuple[Path, Path]:
    """The phantom's image as .npy and its labels as the phantom's .npz (keys, spacing)."""
    from models.phantom import PhantomSpec, generate, write_labels

    ph = generate(PhantomSpec(region="leg", contrast="pd", seed=seed, limbs="both"))
    vol = folder / "phantom_volume.npy"
    np.save(vol, ph.image.astype(np.float32), allow_pickle=False)
    labels = write_labels(ph, folder / "phantom_labels.npz")
    return vol, labels


def grab(widget: QWidget, target: Path) -> None:
    """Save a widget's pixels as PNG."""
    if not widget.grab().save(str(target)):
        raise SystemExit(f"could not write {target}")
    print(f"wrote {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--node", help="a running node's API URL (token in LAUREL_TOKEN)")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PyQt5.QtCore import QEvent, QPointF, Qt
    from PyQt5.QtGui import QMouseEvent
    from PyQt5.QtWidgets import QApplication

    from review_station.client import NodeClient
    from review_station.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    args.out.mkdir(parents=True, exist_ok=True)

    def settle(until: Callable[[], bool] = lambda: True, timeout: float = 120.0) -> None:
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

    with tempfile.TemporaryDirectory() as tmp:
        w = MainWindow(NodeClient(args.node) if args.node else None)
        w.resize(1600, 1000)
        w.show()
        if args.node:
            w.start()
            settle(lambda: w.worklist.table.rowCount() > 0 or w.last_error is not None)
            if w.last_error is not None:
                raise SystemExit(f"the node: {w.last_error.text()}")
            w.worklist.table.selectRow(0)
            grab(w, args.out / "review_worklist.png")
            w.open_study(w.worklist.studies[0].id)
            settle(lambda: w.review.current is not None or w.last_error is not None)
        else:
            vol, labels = write_phantom(Path(tmp), args.seed)
            w.open_local(vol, labels)
            settle()
        page, c = w.review, w.review.canvas
        s = page.current.session
        c.set_slice(s.n_slices // 2)
        values, counts = np.unique(s.labels[c.z][s.labels[c.z] > 0], return_counts=True)
        active = int(values[np.argmax(counts)])
        page.panel.select_muscle(active)
        page.panel.opacity_slider.setValue(45)
        # a correction with the real tools (grow the active muscle); the brush outline hovers over it
        page.acts["grow"].trigger()
        y, x = (int(v) for v in np.argwhere(s.labels[c.z] == active).mean(axis=0))
        c.set_radius(6)
        pos = c.image_to_widget(y, x)
        app.sendEvent(c, QMouseEvent(QEvent.Type.MouseMove, pos, Qt.MouseButton.NoButton,
                                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))  # fmt: skip
        settle()
        grab(w, args.out / "review_main.png")
        c.zoom_at(2.5, QPointF(pos))
        settle()
        grab(c, args.out / "review_zoom.png")
        dlg = w.show_statistics()
        assert dlg is not None
        settle()
        grab(dlg, args.out / "review_statistics.png")
        dlg.close()
        s.mark_saved()  # nothing to ask about on close
        w.close()


if __name__ == "__main__":
    main()
