"""Main window without a node: offline files, toolbox actions and shortcuts, statistics, dialogs, worklist,
and a really unreachable node (a closed port)."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import numpy as np
import pytest
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QApplication, QMessageBox

from review_station.client import NodeClient
from review_station.dialogs import ApproveDialog, RejectDialog, TokenDialog
from review_station.domain import StudySummary
from review_station.main_window import MainWindow
from review_station.text import Heading
from review_station.worklist import WorklistWidget


@pytest.fixture
def offline(qtbot, tmp_path: Path, series):
    image, labels, _ = series
    np.save(tmp_path / "vol.npy", image)
    np.save(tmp_path / "lab.npy", labels)
    w = MainWindow(None)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.open_local(tmp_path / "vol.npy", tmp_path / "lab.npy")
    w.activateWindow()
    w.review.canvas.setFocus()
    return w, labels


def test_offline_files_open_on_the_review_page(offline) -> None:
    w, labels = offline
    assert w.stack.currentWidget() is w.review
    cur = w.review.current
    assert cur is not None and cur.session.labels.shape == labels.shape
    assert w.review.panel.muscles.count() == 12
    assert not w.review.acts["approve"].isEnabled() and not w.review.acts["reject"].isEnabled()
    assert w.review.acts["grow"].isEnabled()


def test_dafne_shortcuts_drive_the_tools(qtbot, offline) -> None:
    w, _ = offline
    page, c = w.review, w.review.canvas
    s = page.current.session
    r = c.radius
    for key in (Qt.Key.Key_Plus, Qt.Key.Key_X):
        qtbot.keyClick(c, key)
    assert c.radius == r + 2
    for key in (Qt.Key.Key_Minus, Qt.Key.Key_Y, Qt.Key.Key_Z):
        qtbot.keyClick(c, key)
    assert c.radius == r - 1
    page.panel.select_muscle(3)
    assert c.overlay.active == 3
    n = (s.labels[c.z] == 3).sum()
    qtbot.keyClick(c, Qt.Key.Key_G)  # grow
    assert (s.labels[c.z] == 3).sum() > n
    qtbot.keyClick(c, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo
    assert (s.labels[c.z] == 3).sum() == n
    qtbot.keyClick(c, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)  # redo
    assert (s.labels[c.z] == 3).sum() > n
    qtbot.keyClick(c, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert not s.history.can_redo
    qtbot.keyClick(c, Qt.Key.Key_E)
    assert c.tool == "erase"
    qtbot.keyClick(c, Qt.Key.Key_P)
    assert c.tool == "paint"
    qtbot.keyClick(c, Qt.Key.Key_O)
    assert not c.overlay.show and not page.panel.overlay_check.isChecked()
    qtbot.keyClick(c, Qt.Key.Key_O)
    assert c.overlay.show


def test_propagate_forward_with_n(qtbot, offline) -> None:
    w, labels = offline
    page, c = w.review, w.review.canvas
    s = page.current.session
    page.panel.select_muscle(5)
    z = c.z
    s.labels[z + 1][s.labels[z + 1] == 5] = 0
    qtbot.keyClick(c, Qt.Key.Key_N)
    assert c.z == z + 1, "propagation moves to the target slice"
    truth, got = labels[z + 1] == 5, s.labels[z + 1] == 5
    assert 2 * (truth & got).sum() / (truth.sum() + got.sum()) > 0.8
    assert s.history.undo_text == f"propagate slice {z + 1} to {z + 2}"


def test_interpolate_block_from_the_toolbox(qtbot, offline) -> None:
    w, _ = offline
    page, c = w.review, w.review.canvas
    s = page.current.session
    page.panel.select_muscle(9)
    s.labels[2:4][s.labels[2:4] == 9] = 0
    c.set_slice(2)
    page.acts["interpolate_block"].trigger()
    assert (s.labels[2] == 9).any() and (s.labels[3] == 9).any()
    assert s.history.undo_text == "interpolate slices 3-4"


def test_mask_buttons_apply_to_all_slices_when_asked(qtbot, offline) -> None:
    w, _ = offline
    page = w.review
    s = page.current.session
    page.panel.select_muscle(2)
    page.panel.all_slices_check.setChecked(True)
    counts = [(s.labels[z] == 2).sum() for z in range(s.n_slices)]
    page.acts["shrink"].trigger()
    assert all((s.labels[z] == 2).sum() < counts[z] for z in range(s.n_slices))
    assert s.history.undo_text == "shrink on all slices"


def test_statistics_dialog_and_csv(qtbot, offline, tmp_path: Path) -> None:
    w, labels = offline
    dlg = w.show_statistics()
    assert dlg is not None and dlg.table.rowCount() == 12
    out = tmp_path / "s.csv"
    with qtbot.waitSignal(dlg.exported):
        dlg.export(out)
    rows = list(csv.DictReader(out.open()))
    assert int(rows[0]["voxels"]) == int((labels == 1).sum())
    dlg.close()


def test_save_labels_offline(qtbot, offline, tmp_path: Path) -> None:
    w, _ = offline
    c = w.review.canvas
    c.set_active(1)
    w.review.current.session.grow(c.z, 1)
    assert w.review.modified
    w.save_labels(tmp_path / "fixed.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "fixed.npy"), w.review.current.session.labels)
    assert not w.review.modified


def test_quitting_with_edits_asks_first(qtbot, offline) -> None:
    w, _ = offline
    c = w.review.canvas
    w.review.current.session.grow(c.z, 1)
    w.close()
    assert w.isVisible() and isinstance(w.dialog, QMessageBox) and w.dialog.isVisible()
    w.dialog.button(QMessageBox.Cancel).click()
    assert w.isVisible()
    w.close()
    with qtbot.waitSignal(w.dialog.finished):
        w.dialog.button(QMessageBox.Discard).click()
    qtbot.waitUntil(lambda: not w.isVisible())


def test_opening_another_study_asks_before_discarding_edits(qtbot, offline, monkeypatch) -> None:
    w, _ = offline
    w.client = NodeClient("http://127.0.0.1:9", "t")
    w.review.current.session.grow(w.review.canvas.z, 1)
    loaded: list[int] = []
    monkeypatch.setattr(w, "_load_study", loaded.append)  # the network part is tested end to end
    w.open_study(4)
    assert isinstance(w.dialog, QMessageBox) and loaded == []
    w.dialog.button(QMessageBox.Cancel).click()
    assert loaded == []
    w.open_study(4)
    w.dialog.button(QMessageBox.Discard).click()
    assert loaded == [4]
    w.review.current.session.mark_saved()


def test_reject_needs_a_reason_and_approve_defaults_to_cancel(qtbot) -> None:
    heading = Heading("DOE, JANE", "P1", "MR leg 2024-01-02")
    r = RejectDialog(heading)
    qtbot.addWidget(r)
    assert not r.reject_button.isEnabled()
    r.reason.setPlainText("   ")
    assert not r.reject_button.isEnabled()
    r.reason.setPlainText("motion artefacts")
    assert r.reject_button.isEnabled() and r.reason_text() == "motion artefacts"
    a = ApproveDialog(heading, ["leg — corrected"])
    qtbot.addWidget(a)
    assert a.comment_text() is None
    assert a.buttons.button(a.buttons.Cancel).isDefault() and not a.approve_button.isDefault()


def test_worklist_shows_studies_and_opens_on_double_click(qtbot) -> None:
    wl = WorklistWidget()
    qtbot.addWidget(wl)
    wl.show()
    studies = [
        StudySummary(7, "1.2.7", "Doe^Jane", "P7", "MR leg", "20240102", "PENDING_REVIEW", None,
                     "2024-01-02T10:00:00+00:00", None, 2, 60),
        StudySummary(9, "1.2.9", "Roe^Rick", "P9", "MR thigh", "20240103", "PENDING_REVIEW", None, None, None,
                     1, 30),
    ]  # fmt: skip
    wl.set_studies(studies)
    assert wl.table.rowCount() == 2 and wl.table.item(wl.row_of(7), 0).text() == "Doe, Jane"
    assert wl.table.item(wl.row_of(7), 6).text().startswith("2024-01-02")
    row = wl.row_of(9)
    rect = wl.table.visualItemRect(wl.table.item(row, 2))
    with qtbot.waitSignal(wl.openRequested) as sig:
        qtbot.mouseClick(wl.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(wl.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert sig.args == [9]
    with qtbot.waitSignal(wl.refreshRequested) as sig:
        wl.filter.setCurrentIndex(wl.filter.findData(None))
    assert sig.args == [None]


def test_unreachable_node_is_reported(qtbot) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = MainWindow(NodeClient(f"http://127.0.0.1:{port}", "tok", connect_timeout=1.0))
    qtbot.addWidget(w)
    w.start()
    qtbot.waitUntil(lambda: w.last_error is not None, timeout=15000)
    assert isinstance(w.last_error, QMessageBox)
    assert "cannot be reached" in w.last_error.text() and "laurel serve" in w.last_error.text()
    assert "cannot be reached" in w.worklist.message.text()
    w.last_error.close()
    w.runner.wait()


def test_missing_token_asks_for_one(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAUREL_TOKEN", raising=False)
    w = MainWindow(NodeClient("http://127.0.0.1:9", None))
    qtbot.addWidget(w)
    w.start()
    assert isinstance(w.dialog, TokenDialog) and w.dialog.isVisible()
    assert w.dialog.token.echoMode() == w.dialog.token.Password
    w.dialog.reject()
    QApplication.processEvents()
