"""Brush latency of the review station: from a posted mouse-move event to the end of the canvas' paintEvent.

A 512² slice with 12 muscles, a stroke of 20 mouse-move events (left button held, radius 8), shown at 1.5×
zoom in a 800×800 canvas (offscreen Qt platform unless QT_QPA_PLATFORM says otherwise). Prints median and
95th percentile in ms against the 16.7 ms of a 60 Hz frame, and the same stroke measured two other ways in the
same run for comparison:
- "full repaint": recompose the whole slice and repaint the whole widget for every event (no dirty box);
- "matplotlib": what a matplotlib-based editor does per dab (``set_data`` of an RGBA overlay, Agg ``draw``).

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/review_paint.py [--repeats 10]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N = 512
N_MUSCLES = 12
EVENTS = 20


def synthetic_series(n_slices: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image with 12 elliptical 'muscles' in two limbs, and their labels (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N]
    labels = np.zeros((N, N), np.uint8)
    image = rng.normal(80.0, 10.0, (N, N)).astype(np.float32)
    for side, cx in enumerate((150, 362)):
        limb = ((yy - 256) / 200.0) ** 2 + ((xx - cx) / 110.0) ** 2 < 1
        image[limb] += 200.0
        for i in range(6):
            ang = i * np.pi / 3
            my, mx = 256 + 110 * np.sin(ang), cx + 55 * np.cos(ang)
            m = ((yy - my) / 45.0) ** 2 + ((xx - mx) / 28.0) ** 2 < 1
            labels[m & limb] = 1 + i + 6 * side
            image[m & limb] += 60.0 + 10 * i
    return np.repeat(image[None], n_slices, 0), np.repeat(labels[None], n_slices, 0)


def stroke_points(i: int) -> list[tuple[int, int]]:
    """20 image points (y, x) along a diagonal crossing several muscles; shifted per repeat."""
    return [(140 + 10 * k + i, 90 + 12 * k) for k in range(EVENTS)]


def bench_qt(repeats: int, full_repaint: bool) -> list[float]:
    """Latencies (ms) of each mouse-move event of ``repeats`` strokes."""
    from PyQt5.QtCore import QEvent, QPointF, Qt
    from PyQt5.QtGui import QMouseEvent
    from PyQt5.QtWidgets import QApplication

    from review_station.domain import default_segments
    from review_station.editing import EditSession
    from review_station.viewer import SliceCanvas

    app = QApplication.instance() or QApplication(sys.argv[:1])
    image, labels = synthetic_series()
    canvas = SliceCanvas()
    canvas.resize(800, 800)
    canvas.show()
    session = EditSession(image, labels.copy(), (6.0, 1.0, 1.0))
    canvas.set_session(session, default_segments(list(range(1, N_MUSCLES + 1))))
    canvas.set_active(3)
    canvas.set_radius(8)
    canvas.zoom_at(768 / 512 / canvas.scale)  # 1.5x, like a 512² slice on a 768 px viewport
    for _ in range(5):
        app.processEvents()
    if full_repaint:  # the naive baseline: recompose everything and repaint everything per event
        orig_move = canvas.mouseMoveEvent

        def move_full(event):
            orig_move(event)
            canvas.refresh()

        canvas.mouseMoveEvent = move_full  # type: ignore[method-assign]

    times: list[float] = []
    for rep in range(repeats):
        pts = [canvas.image_to_widget(y, x) for y, x in stroke_points(rep)]
        press = QMouseEvent(
            QEvent.MouseButtonPress,
            pts[0],
            Qt.MouseButton.LeftButton,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        app.sendEvent(canvas, press)
        app.processEvents()
        for p in [*pts[1:], pts[-1] + QPointF(3, 3)]:
            before = canvas.paint_count
            t0 = time.perf_counter()
            app.postEvent(
                canvas,
                QMouseEvent(
                    QEvent.MouseMove,
                    p,
                    Qt.MouseButton.NoButton,
                    Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier,
                ),
            )
            deadline = t0 + 2.0
            while canvas.paint_count == before and time.perf_counter() < deadline:
                app.processEvents()
            times.append((time.perf_counter() - t0) * 1000.0)
        release = QMouseEvent(
            QEvent.MouseButtonRelease,
            pts[-1],
            Qt.MouseButton.LeftButton,
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
        )
        app.sendEvent(canvas, release)
        app.processEvents()
        session.undo()
        canvas.refresh()
        app.processEvents()
    assert session.history.can_redo, "the strokes did not change the labels"
    canvas.close()
    return times


def bench_matplotlib(repeats: int) -> list[float]:
    """Per-dab time of an imshow overlay updated with set_data and redrawn on the Agg canvas."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from review_station import tools
    from review_station.domain import default_segments

    image, labels = synthetic_series(1)
    lab = labels[0].copy()
    colours = np.zeros((256, 4), np.float32)
    for s in default_segments(list(range(1, N_MUSCLES + 1))):
        colours[s.value, :3] = np.array(s.colour) / 255.0
        colours[s.value, 3] = 0.5
    fig = Figure(figsize=(8, 8), dpi=96)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image[0], cmap="gray")
    over = ax.imshow(colours[lab], interpolation="nearest")
    fig.canvas.draw()
    times = []
    for rep in range(repeats):
        pts = stroke_points(rep)
        for a, b in itertools.pairwise(pts):
            t0 = time.perf_counter()
            tools.stroke(lab, a, b, 8, value=3)
            over.set_data(colours[lab])
            fig.canvas.draw()
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def summary(name: str, ms: list[float]) -> tuple[float, float]:
    """Print and return (median, p95)."""
    med = statistics.median(ms)
    p95 = float(np.percentile(ms, 95))
    print(f"{name:<34} n={len(ms):4d}  median {med:7.2f} ms   p95 {p95:7.2f} ms")
    return med, p95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10, help="strokes per variant (20 events each)")
    ap.add_argument("--no-matplotlib", action="store_true", help="skip the matplotlib comparison")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    print(f"brush stroke on a {N}² slice, {N_MUSCLES} muscles, {EVENTS} mouse-move events per stroke, radius 8")
    med, p95 = summary("review station (dirty box)", bench_qt(args.repeats, full_repaint=False))
    fmed, _ = summary("full recompose + full repaint", bench_qt(args.repeats, full_repaint=True))
    print(f"target: median <= 16.7 ms (60 Hz): {'MET' if med <= 16.7 else 'NOT MET'} "
          f"(median {med:.2f} ms, p95 {p95:.2f} ms)")  # fmt: skip
    print(f"dirty box vs full repaint: {fmed / med:.1f}x faster")
    if not args.no_matplotlib:
        mmed, _ = summary("matplotlib Agg redraw per dab", bench_matplotlib(max(2, args.repeats // 2)))
        print(f"review station vs matplotlib redraw: {mmed / med:.1f}x faster")


if __name__ == "__main__":
    main()
