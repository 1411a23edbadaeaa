"""The window's own behaviour on an in-memory node (``FakeNode``): a 409 keeps the edits, opening reloads,
and the review-quality tools: draft vs corrected with differences and Dice, reformats, locks, window presets,
smoothing, preferences."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt5.QtCore import QPointF, QSettings, Qt
from PyQt5.QtWidgets import QMessageBox

from review_station import render
from review_station.main_window import MainWindow
from tests.review_station.fake_node import FakeNode
from tests.review_station.qt_helpers import drag


@pytest.fixture
def fake(series) -> FakeNode:
    image, labels, segments = series
    other = labels.copy()
    other[:, :10, :10] = 1
    return FakeNode([(image, labels, segments), (image, other, segments)])


def start(qtbot, fake: FakeNode, **kwargs) -> MainWindow:
    w = MainWindow(fake, **kwargs)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    w.start()
    qtbot.waitUntil(lambda: w.worklist.table.rowCount() == 2)
    return w


def open_study(qtbot, w: MainWindow, study_id: int) -> None:
    w.open_study(study_id)
    qtbot.waitUntil(lambda: w.open_study_id == study_id and w.review.current is not None and not w.runner.busy)
    w.review.canvas.setFocus()


def test_a_409_from_the_node_is_shown_and_the_edits_stay(qtbot, fake) -> None:
    w = start(qtbot, fake, autosave_ms=3_600_000)
    open_study(qtbot, w, 10)
    page = w.review
    page.panel.select_muscle(3)
    drag(qtbot, page.canvas, [(40, 10), (40, 40)])
    edits = page.current.session.labels.copy()
    fake.refuse_put = "series 100 now belongs to another study (SeriesInstanceUID 1.2.9.9)"
    w.act_save_node.trigger()
    qtbot.waitUntil(lambda: w.last_error is not None and not w.writer.busy)
    assert "409" in w.last_error.text() and "1.2.9.9" in w.last_error.text() and "kept" in w.last_error.text()
    assert fake.puts[-1] == (100, "1.2.826.0.1.100"), "the UID of the series on screen was sent"
    np.testing.assert_array_equal(page.current.session.labels, edits)
    assert page.modified and page.editable
    n = len(fake.puts)
    w.autosave()
    assert len(fake.puts) == n, "no autosave into a refusal"
    page.current.session.mark_saved()


def test_opening_always_reads_the_study_again_from_the_node(qtbot, fake) -> None:
    w = start(qtbot, fake)
    open_study(qtbot, w, 10)
    changed = w.review.current.session.labels.copy()
    changed[0, :5, :5] = 7
    fake.corrected[100] = changed  # saved meanwhile (e.g. by this station, earlier)
    w.show_worklist()
    open_study(qtbot, w, 10)
    np.testing.assert_array_equal(w.review.current.session.labels, changed)
    assert w.review.current.draft is not None and not np.array_equal(w.review.current.draft, changed)


def test_switching_study_saves_the_corrections_first(qtbot, fake) -> None:
    w = start(qtbot, fake, autosave_ms=3_600_000)
    open_study(qtbot, w, 10)
    w.review.panel.select_muscle(2)
    drag(qtbot, w.review.canvas, [(30, 10), (30, 40)])
    edits = w.review.current.session.labels.copy()
    w.open_study(11)
    qtbot.waitUntil(lambda: w.open_study_id == 11 and not w.runner.busy)
    np.testing.assert_array_equal(fake.corrected[100], edits)


def test_draft_difference_and_dice(qtbot, fake) -> None:
    w = start(qtbot, fake)
    open_study(qtbot, w, 10)
    page, c = w.review, w.review.canvas
    s = page.current.session
    page.panel.select_muscle(4)
    drag(qtbot, c, [(48, 5), (48, 60)])
    qtbot.keyClick(c, Qt.Key.Key_D, Qt.KeyboardModifier.ShiftModifier)  # differences
    assert c.mark_differences and (c._buf == render.DIFF_COLOUR).any()
    assert "Dice" in page.panel.dice_label.text()
    draft = page.current.draft
    for v, d in page.dice_scores.items():
        unchanged = np.array_equal(draft == v, s.labels == v)
        assert (d == 1.0) == unchanged or np.isnan(d), v
    assert page.dice_scores[4] < 1.0
    qtbot.keyClick(c, Qt.Key.Key_D)  # the draft, read only
    assert c.showing_reference and not page.acts["grow"].isEnabled()
    before = s.labels.copy()
    drag(qtbot, c, [(20, 20), (20, 40)])
    np.testing.assert_array_equal(s.labels, before)
    qtbot.keyClick(c, Qt.Key.Key_D)
    assert not c.showing_reference and page.acts["grow"].isEnabled()
    s.mark_saved()


def test_reformats_follow_the_cursor_and_click_to_a_slice(qtbot, fake) -> None:
    w = start(qtbot, fake)
    open_study(qtbot, w, 10)
    page, c = w.review, w.review.canvas
    qtbot.keyClick(c, Qt.Key.Key_R)
    assert page.reformats.isVisible()
    qtbot.waitUntil(lambda: page.coronal._buf.shape == (6, 96))
    c._mouse = QPointF(c.point_of_pixel(30, 70))
    c._emit_cursor_info()
    assert page.coronal.point[1:] == (30, 70) and page.sagittal._buf.shape == (6, 96)
    view = page.coronal
    r = view._layout()
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=QPointF(r.center().x(), r.top() + r.height() * 0.1).toPoint())
    assert c.z == 0 and page.coronal.point[0] == 0


def test_lock_presets_and_smoothing(qtbot, fake) -> None:
    w = start(qtbot, fake)
    open_study(qtbot, w, 10)
    page, c = w.review, w.review.canvas
    s = page.current.session
    page.panel.select_muscle(5)
    qtbot.keyClick(c, Qt.Key.Key_L)
    assert s.locked[5] and "locked" in page.panel.muscles.currentItem().text()
    page.panel.select_muscle(6)
    y, x = (int(v) for v in np.argwhere(s.labels[c.z] == 5).mean(axis=0))
    mask5 = s.labels[c.z] == 5
    c.set_radius(8)
    drag(qtbot, c, [(y, x)])
    np.testing.assert_array_equal(s.labels[c.z] == 5, mask5)
    page.panel.muscleOpacityChosen.emit(7, 0.25)  # right-click menu of the list
    assert c.overlay.strength[7] == 0.25 and "25%" in page.panel.muscles.item(6).text()
    auto = (c.window_width, c.window_level)
    qtbot.keyClick(c, Qt.Key.Key_W, Qt.KeyboardModifier.ShiftModifier)
    assert (c.window_width, c.window_level) != auto and page.panel.preset_combo.currentIndex() == 1
    qtbot.keyClick(c, Qt.Key.Key_W)
    assert (c.window_width, c.window_level) == pytest.approx(auto)
    s.labels[c.z, 2, 2] = 6  # a stray pixel of muscle 6
    qtbot.keyClick(c, Qt.Key.Key_S)
    assert s.labels[c.z, 2, 2] == 0 and s.history.undo_text.startswith("smooth")
    s.mark_saved()


def test_preferences_are_kept_between_sessions(qtbot, fake, tmp_path) -> None:
    settings = QSettings(str(tmp_path / "review.ini"), QSettings.IniFormat)
    w = start(qtbot, fake, settings=settings)
    w.review.panel.radius_spin.setValue(9)
    w.review.panel.opacity_slider.setValue(30)
    w.review.acts["reformats"].setChecked(True)
    w.close()
    again = MainWindow(None, settings=QSettings(str(tmp_path / "review.ini"), QSettings.IniFormat))
    qtbot.addWidget(again)
    assert again.review.canvas.radius == 9 and again.review.panel.opacity_slider.value() == 30
    assert again.review.acts["reformats"].isChecked()
    from review_station.preferences import last_node

    assert last_node(settings) == fake.base_url


def test_quitting_offline_still_asks(qtbot, tmp_path, series) -> None:
    image, _, _ = series
    np.save(tmp_path / "v.npy", image)
    w = MainWindow(None)
    qtbot.addWidget(w)
    w.open_local(tmp_path / "v.npy")
    w.review.current.session.labels[0, 0, 0] = 1
    w.close()
    assert isinstance(w.dialog, QMessageBox) and w.dialog.textFormat() == Qt.TextFormat.PlainText
    w.dialog.button(QMessageBox.Discard).click()


def test_a_new_token_for_the_same_node_keeps_the_study_open(qtbot, fake) -> None:
    w = start(qtbot, fake)
    open_study(qtbot, w, 10)
    w._token_given(fake.base_url + "/", "a-new-token")
    assert w.client is fake and w.study_client is fake and w.open_study_id == 10 and w.review.current is not None
    assert w._decidable() is not None


def test_closing_while_the_node_is_down_asks_and_keeps_the_edits_here(qtbot, fake, tmp_path) -> None:
    from review_station.recovery import RecoveryStore

    kept = RecoveryStore(tmp_path / "kept")
    w = start(qtbot, fake, recovery=kept, autosave_ms=3_600_000)
    open_study(qtbot, w, 10)
    w.review.panel.select_muscle(2)
    drag(qtbot, w.review.canvas, [(30, 10), (30, 40)])
    edits = w.review.current.session.labels.copy()
    fake.down = True
    w.close()
    qtbot.waitUntil(lambda: isinstance(w.dialog, QMessageBox) and w.dialog.isVisible())
    assert w.isVisible() and "cannot be reached" in w.dialog.text()
    np.testing.assert_array_equal(kept.load("1.2.826.0.1.100").labels, edits)
    w.dialog.button(QMessageBox.Cancel).click()
    assert w.isVisible()
    fake.down = False
    w.close()  # the node is back: saved, then closed
    qtbot.waitUntil(lambda: not w.isVisible())
    np.testing.assert_array_equal(fake.corrected[100], edits)
    assert kept.load("1.2.826.0.1.100") is None, "the copy here is dropped once the node has the corrections"
