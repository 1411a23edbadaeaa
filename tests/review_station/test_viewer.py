"""The canvas driven by real Qt mouse, wheel and key events (offscreen platform)."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt5.QtCore import QPoint, QPointF, Qt
from PyQt5.QtGui import QColor

from review_station.editing import EditSession
from review_station.viewer import SliceCanvas
from tests.review_station.qt_helpers import drag, move, wheel


@pytest.fixture
def canvas(qtbot, series):
    image, labels, segments = series
    c = SliceCanvas()
    c.resize(480, 480)
    qtbot.addWidget(c)
    c.show()
    qtbot.waitExposed(c)
    c.set_session(EditSession(image, labels.copy(), (5.0, 1.0, 1.0)), segments)
    return c


def test_paint_stroke_changes_exactly_the_brushed_pixels(qtbot, canvas) -> None:
    c = canvas
    s = c.session
    before = s.labels.copy()
    c.set_active(7)
    c.set_radius(2)
    z = c.z
    drag(qtbot, c, [(10, 10), (10, 20), (10, 30)])
    assert (s.labels[z, 10, 10:31] == 7).all() and (s.labels[z, 8:13, 12:29] == 7).all()
    changed = np.argwhere(s.labels != before)
    assert set(changed[:, 0]) == {z}
    assert changed[:, 1].min() >= 8 and changed[:, 1].max() <= 12, "painted outside the brush"
    assert s.history.undo_text == f"paint on slice {z + 1}"
    s.undo()
    np.testing.assert_array_equal(s.labels, before)


def test_modifier_shortcuts_paint_and_erase(qtbot, canvas) -> None:
    c = canvas
    s = c.session
    c.set_tool("pan")
    c.set_active(1)
    z = c.z
    y, x = (int(v) for v in np.argwhere(s.labels[z] == 1).mean(axis=0))
    drag(qtbot, c, [(y, x)], mods=Qt.KeyboardModifier.ControlModifier)  # Ctrl = erase (Dafne)
    assert s.labels[z, y, x] == 0
    drag(qtbot, c, [(2, 2)], mods=Qt.KeyboardModifier.ShiftModifier)  # Shift = paint
    assert s.labels[z, 2, 2] == 1


def test_erase_only_active_unless_erase_all(qtbot, canvas) -> None:
    c = canvas
    s = c.session
    z = c.z
    c.set_tool("erase")
    c.set_radius(30)
    c.set_active(2)
    before = s.labels[z].copy()
    yy, xx = np.mgrid[: before.shape[0], : before.shape[1]]
    disk = (yy - 48) ** 2 + (xx - 28) ** 2 <= 30**2
    assert (before[disk] == 2).any() and (before[disk] == 3).any()
    drag(qtbot, c, [(48, 28)])
    assert not (s.labels[z][disk] == 2).any() and (s.labels[z][disk] == 3).any()
    np.testing.assert_array_equal(s.labels[z][~disk], before[~disk])
    c.erase_all = True
    drag(qtbot, c, [(48, 28)])
    assert not s.labels[z][disk].any()
    np.testing.assert_array_equal(s.labels[z][~disk], before[~disk])


def test_read_only_canvas_does_not_paint(qtbot, canvas) -> None:
    canvas.read_only = True
    before = canvas.session.labels.copy()
    drag(qtbot, canvas, [(5, 5), (5, 40)])
    np.testing.assert_array_equal(canvas.session.labels, before)


def test_slice_navigation_by_wheel_and_keys(qtbot, canvas) -> None:
    c = canvas
    z0 = c.z
    with qtbot.waitSignal(c.sliceChanged):
        wheel(c, -120)  # towards the user: next slice
    assert c.z == z0 + 1
    wheel(c, 120)
    assert c.z == z0
    c.setFocus()
    for key, expected in ((Qt.Key.Key_Down, z0 + 1), (Qt.Key.Key_Right, z0 + 2), (Qt.Key.Key_Up, z0 + 1),
                          (Qt.Key.Key_Left, z0), (Qt.Key.Key_PageDown, z0 + 1), (Qt.Key.Key_Home, 0),
                          (Qt.Key.Key_End, 5)):  # fmt: skip
        qtbot.keyClick(c, key)
        assert c.z == expected, key
    qtbot.keyClick(c, Qt.Key.Key_Down)
    assert c.z == 5, "clamped at the last slice"


def test_ctrl_wheel_sizes_the_brush_and_alt_wheel_zooms(qtbot, canvas) -> None:
    c = canvas
    r = c.radius
    with qtbot.waitSignal(c.brushChanged):
        wheel(c, 120, Qt.KeyboardModifier.ControlModifier)
    assert c.radius == r + 1
    wheel(c, -120, Qt.KeyboardModifier.ControlModifier)
    assert c.radius == r
    s = c.scale
    wheel(c, 120, Qt.KeyboardModifier.AltModifier)
    assert c.scale == pytest.approx(s * 1.25)


def test_zoom_keeps_the_anchor_and_pan_moves(qtbot, canvas) -> None:
    c = canvas
    anchor = QPointF(100, 150)
    before = c.widget_to_image(anchor)
    c.zoom_at(2.0, anchor)
    assert c.widget_to_image(anchor) == pytest.approx(before)
    p = c.image_to_widget(30, 30)
    c.set_tool("pan")
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(200, 200))
    move(c, QPoint(230, 190))
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(230, 190))
    q = c.image_to_widget(30, 30)
    assert (q.x() - p.x(), q.y() - p.y()) == pytest.approx((30, -10))
    c.fit()
    h, w = c.session.labels.shape[1:]
    assert c.scale == pytest.approx(min(c.width() / w, c.height() / h))


def test_right_drag_windows_the_image(qtbot, canvas) -> None:
    c = canvas
    w0, l0 = c.window_width, c.window_level
    grey0 = c.grab().toImage().pixelColor(c.point_of_pixel(92, 4)).red()
    with qtbot.waitSignal(c.windowChanged):
        qtbot.mousePress(c, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, QPoint(200, 200))
        move(c, QPoint(260, 260), Qt.MouseButton.RightButton)
        qtbot.mouseRelease(c, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, QPoint(260, 260))
    assert c.window_width > w0 and c.window_level > l0
    grey1 = c.grab().toImage().pixelColor(c.point_of_pixel(92, 4)).red()
    assert grey1 < grey0, "a higher level darkens the background"
    c.reset_window()
    assert (c.window_width, c.window_level) == pytest.approx((w0, l0))


def test_overlay_is_drawn_and_can_be_hidden(qtbot, canvas) -> None:
    c = canvas
    s = c.session
    z = c.z
    y, x = (int(v) for v in np.argwhere(s.labels[z] == 4).mean(axis=0))
    seg = next(g for g in c.segments if g.value == 4)

    def colour() -> QColor:
        return c.grab().toImage().pixelColor(c.point_of_pixel(y, x))

    c.set_active(4)
    c.set_opacity(1.0)
    assert (colour().red(), colour().green(), colour().blue()) == seg.colour
    c.set_overlay_visible(False)
    hidden = colour()
    assert hidden.red() == hidden.green() == hidden.blue()
    c.set_overlay_visible(True)
    c.set_label_visible(4, False)
    assert colour().red() == colour().green() == colour().blue()


def test_brush_dab_repaints_only_a_small_region(qtbot, canvas) -> None:
    c = canvas
    c.set_radius(3)
    painted: list = []
    orig = c.paintEvent

    def spy(event):
        painted.append(event.rect())
        orig(event)

    c.paintEvent = spy
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.point_of_pixel(40, 40))
    move(c, c.point_of_pixel(40, 44))
    qtbot.waitUntil(lambda: bool(painted))
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.point_of_pixel(40, 44))
    area = max(r.width() * r.height() for r in painted)
    assert area < 0.1 * c.width() * c.height(), f"dirty region {area} px is not small"
