"""A day of reviews: choosing the muscle by keyboard and by picking, the layout at 1920×1080 (24 thigh muscles
without scrolling) and at 1366×768 (every tool reachable), the worklist by keyboard (Enter), with seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PyQt5.QtCore import QPoint, QRect, Qt
from PyQt5.QtWidgets import QApplication, QWidget

from review_station.domain import StudySummary
from review_station.main_window import MainWindow
from review_station.worklist import COLUMNS, WorklistWidget

ALT = Qt.KeyboardModifier.AltModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture(scope="module")
def thigh_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A SYNTHETIC two-thigh phantom (24 muscles) as the station's offline files."""
    from models.phantom import PhantomSpec, generate, write_labels

    folder = tmp_path_factory.mktemp("thigh")
    ph = generate(PhantomSpec(region="thigh", contrast="pd", seed=5, n_slices=6, matrix=192))
    np.save(folder / "volume.npy", ph.image.astype(np.float32))
    return folder / "volume.npy", write_labels(ph, folder / "labels.npz")


@pytest.fixture
def thigh(qtbot, thigh_files) -> MainWindow:
    w = MainWindow(None)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.open_local(*thigh_files)
    w.activateWindow()
    w.review.canvas.setFocus()
    assert w.review.panel.muscles.count() == 24
    return w


def test_number_keys_and_tab_choose_the_active_muscle(qtbot, thigh) -> None:
    page, c = thigh.review, thigh.review.canvas
    values = page.panel.values
    qtbot.keyClick(c, Qt.Key.Key_3)
    assert c.overlay.active == values[2] and page.panel.muscles.currentRow() == 2
    qtbot.keyClick(c, Qt.Key.Key_0)
    assert c.overlay.active == values[9]
    qtbot.keyClick(c, Qt.Key.Key_Tab)
    assert c.overlay.active == values[10]
    qtbot.keyClick(c, Qt.Key.Key_Tab, SHIFT)
    qtbot.keyClick(c, Qt.Key.Key_Tab, SHIFT)
    assert c.overlay.active == values[8]
    qtbot.keyClick(c, Qt.Key.Key_1)
    qtbot.keyClick(c, Qt.Key.Key_Tab, SHIFT)
    assert c.overlay.active == values[-1], "Shift+Tab on the first muscle goes to the last"
    qtbot.keyClick(c, Qt.Key.Key_Tab)
    assert c.overlay.active == values[0]
    assert c.hasFocus(), "the image keeps the keyboard"
    rows = [page.panel.muscles.item(i).text() for i in range(page.panel.muscles.count())]
    assert rows[0].startswith("1 ") and rows[8].startswith("9 ") and rows[9].startswith("0 ")
    assert not rows[10][0].isdigit(), "only the first ten have a key"


def test_alt_click_takes_the_muscle_under_the_pointer(qtbot, thigh) -> None:
    page, c = thigh.review, thigh.review.canvas
    labels = page.current.session.labels[c.z]
    target = page.panel.values[17]
    y, x = (int(v) for v in np.argwhere(labels == target)[len(np.argwhere(labels == target)) // 2])
    qtbot.keyClick(c, Qt.Key.Key_1)
    before = labels.copy()
    qtbot.mouseClick(c, Qt.MouseButton.LeftButton, ALT, c.point_of_pixel(y, x))
    assert c.overlay.active == target and page.panel.muscles.currentRow() == 17
    np.testing.assert_array_equal(labels, before)  # picking never paints
    by, bx = np.argwhere(labels == 0)[0]
    qtbot.mouseClick(c, Qt.MouseButton.LeftButton, ALT, c.point_of_pixel(int(by), int(bx)))
    assert c.overlay.active == target, "background keeps the active muscle"


def _inside(widget: QWidget, window: QWidget) -> bool:
    top_left = widget.mapTo(window, QPoint(0, 0))
    return window.rect().contains(QRect(top_left, widget.size())) and widget.isVisible()


def test_24_thigh_muscles_without_scrolling_at_1920x1080(qtbot, thigh) -> None:
    thigh.resize(1920, 1080)
    qtbot.waitUntil(lambda: thigh.width() == 1920 and thigh.height() == 1080)
    QApplication.processEvents()
    lst = thigh.review.panel.muscles
    assert lst.verticalScrollBar().maximum() == 0
    viewport = lst.viewport().rect()
    for i in range(lst.count()):
        assert viewport.contains(lst.visualItemRect(lst.item(i))), f"row {i + 1} is not fully visible"


def test_every_tool_is_reachable_at_1366x768(qtbot, thigh) -> None:
    hint = thigh.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 768 - 40, "the window fits the screen (with a taskbar)"
    thigh.resize(1366, 728)
    qtbot.waitUntil(lambda: thigh.width() == 1366 and thigh.height() == 728)
    QApplication.processEvents()
    panel = thigh.review.panel
    for i in range(panel.tabs.count()):
        panel.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        page = panel.tabs.widget(i)
        for child in page.findChildren(QWidget):
            if child.isVisibleTo(page):
                assert _inside(child, thigh), f"tab {panel.tabs.tabText(i)}: {child!r} is cut off"
    for name in ("approve_next", "approve", "reject"):
        button = next(
            b
            for b in panel.findChildren(QWidget)
            if getattr(b, "defaultAction", lambda: None)() is thigh.review.acts[name]
        )
        assert _inside(button, thigh)
    assert panel.muscles.height() >= 120
    assert _inside(thigh.review.canvas, thigh) and thigh.review.canvas.width() >= 700


def _study(sid: int, name: str, received: str | None, **kw) -> StudySummary:
    return StudySummary(sid, f"1.2.{sid}", name, f"P{sid}", "MR thigh", "20240102", "PENDING_REVIEW", None, received,
                        None, 1, 30, **kw)  # fmt: skip


def test_worklist_oldest_first_to_the_second_with_who_and_enter_opens(qtbot) -> None:
    wl = WorklistWidget()
    qtbot.addWidget(wl)
    wl.show()
    qtbot.waitExposed(wl)
    wl.set_studies([
        _study(1, "LATE^ONE", "2024-01-02T10:00:07Z", approved_by="Dr B"),
        _study(2, "EARLY^TWO", "2024-01-02T10:00:03Z", in_progress_by="Dr A"),
        _study(3, "FAILED^<b>X</b>", "2024-01-02T10:00:05Z"),
    ])  # fmt: skip
    col = {name: i for i, name in enumerate(COLUMNS)}
    order = [int(wl.table.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(3)]
    assert order == [2, 3, 1]
    received = wl.table.item(0, col["Received"]).text()
    assert len(received) == len("2024-01-02 10:00:03") and received.endswith(":03")  # local time zone, seconds
    assert wl.table.item(0, col["In progress"]).text() == "Dr A"
    assert wl.table.item(2, col["Approved by"]).text() == "Dr B"
    assert wl.table.item(1, col["Patient"]).text() == "FAILED, <b>X</b>"
    wl.table.setFocus()
    wl.table.selectRow(1)
    with qtbot.waitSignal(wl.openRequested) as sig:
        qtbot.keyClick(wl.table, Qt.Key.Key_Return)
    assert sig.args == [3]


def test_approve_dialog_by_keyboard_alt_a_approves_enter_alone_does_not(qtbot) -> None:
    from review_station.dialogs import ApproveDialog
    from review_station.text import Heading

    dlg = ApproveDialog(Heading("DOE, JANE", "P1", "MR thigh"), ["thigh — corrected"], then_next=True)
    qtbot.addWidget(dlg)
    dlg.open()
    qtbot.waitExposed(dlg)
    dlg.activateWindow()
    with qtbot.waitSignal(dlg.rejected):
        qtbot.keyClick(dlg, Qt.Key.Key_Return)  # Cancel is the default button: Enter alone never approves
    dlg.open()
    qtbot.waitExposed(dlg)
    dlg.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is dlg.comment)
    with qtbot.waitSignal(dlg.accepted):
        qtbot.keyClick(dlg.comment, Qt.Key.Key_A, ALT)  # typing a comment, then Alt+A
