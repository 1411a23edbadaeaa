"""Real Qt input events for the review station tests (imported as ``tests.review_station.qt_helpers``)."""

from __future__ import annotations

from PyQt5.QtCore import QEvent, QPoint, QPointF, Qt
from PyQt5.QtGui import QMouseEvent, QWheelEvent
from PyQt5.QtWidgets import QApplication

from review_station.viewer import SliceCanvas

LEFT = Qt.MouseButton.LeftButton
NONE = Qt.KeyboardModifier.NoModifier


def move(c: SliceCanvas, pos: QPoint, buttons=LEFT, mods=NONE) -> None:
    """A mouse-move event with buttons held (QTest.mouseMove only moves the cursor; offscreen ignores it)."""
    ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(pos), Qt.MouseButton.NoButton, buttons, mods)
    QApplication.sendEvent(c, ev)


def drag(qtbot, c: SliceCanvas, points: list[tuple[int, int]], button=LEFT, mods=NONE) -> None:
    """Press at the first image pixel (y, x), move through the others, release at the last."""
    pts = [c.point_of_pixel(y, x) for y, x in points]
    qtbot.mousePress(c, button, mods, pts[0])
    for p in pts[1:]:
        move(c, p, button, mods)
    qtbot.mouseRelease(c, button, mods, pts[-1])


def wheel(c: SliceCanvas, dy: int, mods=NONE) -> None:
    """One wheel notch (120 = away from the user) at the canvas centre."""
    pos = QPointF(c.width() / 2, c.height() / 2)
    glob = QPointF(c.mapToGlobal(pos.toPoint()))
    no_button, phase = Qt.MouseButton.NoButton, Qt.ScrollPhase.NoScrollPhase
    ev = QWheelEvent(pos, glob, QPoint(0, 0), QPoint(0, dy), no_button, mods, phase, False)
    QApplication.sendEvent(c, ev)
