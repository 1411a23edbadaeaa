"""Acceptance against a REAL node (``node_api``: two SYNTHETIC leg studies pending review, real drafts):
patient identity as plain text, corrections that survive closing, errors and a change of node, Approve & next.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PyQt5.QtCore import Qt
from PyQt5.QtGui import QTextDocument
from PyQt5.QtWidgets import QAction, QMessageBox

pytest.importorskip("dicom_node.api.app", reason="the node API is not there yet")

from review_station.client import NodeClient, NotFound
from review_station.dialogs import AmendDialog, ApproveDialog, TokenDialog
from review_station.main_window import MainWindow
from review_station.recovery import RecoveryStore, install_excepthook
from tests.review_station.node_helpers import (
    busiest,
    open_first_pending,
    open_row,
    open_window,
    wait_open,
    wait_worklist,
)
from tests.review_station.qt_helpers import drag

RICH_NAME = "SMITH^JOHN</b> (MRN-111111)<br>&amp;<!--"
SHOWN_NAME = "SMITH, JOHN</b> (MRN-111111)<br>&amp;<!--"
CTRL = Qt.KeyboardModifier.ControlModifier


def send_study(node, folder: Path, seed: int, **study: str) -> int:
    """A SYNTHETIC leg study with the given patient/study attributes, sent to the node; its id once pending."""
    from models.phantom import PhantomSpec, StudyInfo, generate, write_series
    from tests.workflow_fixtures import send_files

    ph = generate(PhantomSpec(region="leg", contrast="t1", seed=seed, n_slices=8, matrix=256))
    info = replace(StudyInfo.for_subject("leg", seed), **study)
    send_files(node.node.port, write_series(ph, folder / f"study{seed}", study=info))
    st = node.wait_state(info.StudyInstanceUID, {"PENDING_REVIEW", "FAILED"})
    assert st["state"] == "PENDING_REVIEW", st["failure_reason"]
    return int(st["id"])


def paint_stroke(qtbot, w: MainWindow, row: int) -> dict[int, np.ndarray]:
    """Paint the busiest muscle across row ``row`` of the slice on screen; the labels of every series."""
    page, c = w.review, w.review.canvas
    s = page.current.session
    page.panel.select_muscle(busiest(s.labels, c.z))
    c.set_radius(2)
    width = s.labels.shape[2]
    drag(qtbot, c, [(row, width // 4), (row, width // 2)])
    assert page.modified
    return {sd.summary.id: sd.session.labels.copy() for sd in page.series}


def node_has(node, edits: dict[int, np.ndarray]) -> bool:
    client = NodeClient(node.url, node.token)
    try:
        return all(np.array_equal(client.labels(sid, "corrected"), lab) for sid, lab in edits.items())
    except NotFound:
        return False


def test_rich_text_patient_name_is_shown_literally(qtbot, node, tmp_path: Path) -> None:
    study_id = send_study(node, tmp_path, 4545, PatientName=RICH_NAME, PatientID="MRN-111111")
    w = open_window(qtbot, node)
    wait_worklist(qtbot, w)
    qtbot.waitUntil(lambda: w.worklist.row_of(study_id) is not None, timeout=30000)
    as_markup = QTextDocument()
    as_markup.setHtml(f"<b>{SHOWN_NAME}</b>")  # what the old rich-text heading did with it
    assert as_markup.toPlainText() != SHOWN_NAME, "as rich text the name would lose its tail"
    assert w.worklist.table.item(w.worklist.row_of(study_id), 0).text() == SHOWN_NAME
    open_row(qtbot, w, study_id)
    panel = w.review.panel
    assert panel.patient_label.text() == SHOWN_NAME
    assert panel.patient_label.textFormat() == Qt.TextFormat.PlainText
    assert panel.patient_id_label.text() == "Patient ID: MRN-111111" and panel.patient_id_label.isVisible()
    assert panel.patient_id_label.textFormat() == Qt.TextFormat.PlainText
    assert SHOWN_NAME in w.windowHandle().title() and "MRN-111111" in w.windowHandle().title()
    w.review.acts["approve"].trigger()
    dlg = w.dialog
    assert isinstance(dlg, ApproveDialog) and dlg.isVisible()
    assert dlg.who.textFormat() == Qt.TextFormat.PlainText
    assert dlg.who.text().splitlines()[:2] == [f"Patient: {SHOWN_NAME}", "Patient ID: MRN-111111"]
    dlg.reject()
    w.close()


def test_autosave_and_resume_after_closing_the_window(qtbot, node) -> None:
    w = open_window(qtbot, node, autosave_ms=300)
    study_id = open_first_pending(qtbot, w)
    edits = paint_stroke(qtbot, w, row=20)
    qtbot.waitUntil(lambda: not w.review.modified, timeout=60000)  # the autosave timer sent them
    assert node_has(node, edits)
    client = NodeClient(node.url, node.token)
    assert client.study(study_id).state == "PENDING_REVIEW", "saving corrections never approves"
    edits = paint_stroke(qtbot, w, row=30)
    w.autosave_timer.stop()
    w.close()  # with corrections the node does not have yet: they are saved, then the window closes
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=60000)
    assert node_has(node, edits) and client.study(study_id).state == "PENDING_REVIEW"

    again = open_window(qtbot, node)
    wait_worklist(qtbot, again)
    open_row(qtbot, again, study_id)
    for sd in again.review.series:  # where the radiologist left, and the draft beside it
        np.testing.assert_array_equal(sd.session.labels, edits[sd.summary.id])
        np.testing.assert_array_equal(sd.draft, client.labels(sd.summary.id, "draft"))
    assert not again.review.modified
    again.close()


def test_connecting_to_another_node_closes_the_study_after_saving_it(qtbot, node, workflow_node_factory) -> None:
    other = workflow_node_factory()  # a second, empty node
    w = open_window(qtbot, node)
    study_id = open_first_pending(qtbot, w)
    edits = paint_stroke(qtbot, w, row=24)
    w.act_connect.trigger()
    token_dialog = w.dialog
    assert isinstance(token_dialog, TokenDialog)
    token_dialog.url.setText(other.url)
    token_dialog.token.setText(other.token)
    token_dialog.accept()
    box = w.dialog
    assert isinstance(box, QMessageBox) and box.isVisible() and node.url in box.text() and other.url in box.text()
    box.button(QMessageBox.Save).click()
    qtbot.waitUntil(lambda: w.client.base_url == other.url and w.review.current is None, timeout=60000)
    assert w.open_study_id is None and w.study_client is None and w.stack.currentWidget() is w.worklist
    assert not w.review.acts["approve"].isEnabled() and not w.review.acts["approve_next"].isEnabled()
    assert w._decidable() is None
    qtbot.waitUntil(lambda: "No study" in w.worklist.message.text(), timeout=30000)
    assert w.worklist.studies == [], "nothing of the old node is listed"
    assert node_has(node, edits), "the corrections went to the node they came from"
    assert NodeClient(node.url, node.token).study(study_id).state == "PENDING_REVIEW"
    w.close()


@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_slot_keeps_the_edits_and_they_are_offered_again(qtbot, node, tmp_path: Path) -> None:
    kept = RecoveryStore(tmp_path / "kept")
    w = open_window(qtbot, node, recovery=kept, autosave_ms=3_600_000)
    previous = install_excepthook(w)
    try:
        study_id = open_first_pending(qtbot, w)
        edits = paint_stroke(qtbot, w, row=22)
        boom = QAction(w)
        boom.triggered.connect(lambda: 1 / 0)  # any bug in a slot
        boom.trigger()
    finally:
        sys.excepthook = previous
    assert w.isVisible() and isinstance(w.last_error, QMessageBox)
    assert "ZeroDivisionError" in w.last_error.text() and "kept on this computer" in w.last_error.text()
    for sd in w.review.series:
        np.testing.assert_array_equal(sd.session.labels, edits[sd.summary.id])  # still on screen
        np.testing.assert_array_equal(kept.load(sd.summary.SeriesInstanceUID).labels, edits[sd.summary.id])
    w._close_confirmed = True  # the station dies without saving (as after a hard crash)
    w.close()
    assert not node_has(node, edits)

    again = open_window(qtbot, node, recovery=kept)
    wait_worklist(qtbot, again)
    open_row(qtbot, again, study_id)
    offer = again.dialog
    assert isinstance(offer, QMessageBox) and offer.isVisible() and "kept on this computer" in offer.text()
    offer.button(QMessageBox.Yes).click()
    for sd in again.review.series:
        np.testing.assert_array_equal(sd.session.labels, edits[sd.summary.id])
        assert kept.load(sd.summary.SeriesInstanceUID) is None
    assert again.review.modified
    again.close()  # and now they reach the node
    qtbot.waitUntil(lambda: not again.isVisible(), timeout=60000)
    assert node_has(node, edits)


def test_approve_and_next_opens_the_next_pending_study(qtbot, node) -> None:
    w = open_window(qtbot, node)
    first = open_first_pending(qtbot, w)
    second = next(s.id for s in w.worklist.studies if s.id != first)
    edits = paint_stroke(qtbot, w, row=26)
    qtbot.keyClick(w.review.canvas, Qt.Key.Key_Return, CTRL)  # action 1: Ctrl+Enter
    dlg = w.dialog
    assert isinstance(dlg, ApproveDialog) and dlg.isVisible() and "next" in dlg.approve_button.text()
    qtbot.mouseClick(dlg.approve_button, Qt.MouseButton.LeftButton)  # action 2: confirm
    wait_open(qtbot, w, second)
    assert w.review.study.state == "PENDING_REVIEW" and w.review.editable and not w.review.modified
    client = NodeClient(node.url, node.token)
    assert client.study(first).state in ("APPROVED", "EXPORTED")
    assert node_has(node, edits)

    # Amend the approved study: it opens again, editable, with the approved labels, and can be approved anew.
    w._load_study(first)
    wait_open(qtbot, w, first)
    assert not w.review.editable and w.review.acts["amend"].isEnabled()
    assert not w.review.acts["approve"].isEnabled()
    w.review.acts["amend"].trigger()
    dlg = w.dialog
    assert isinstance(dlg, AmendDialog) and not dlg.reject_button.isEnabled()  # a reason is required
    dlg.reason.setPlainText("missed part of a muscle")
    qtbot.mouseClick(dlg.reject_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: w.review.study is not None and w.review.study.state == "PENDING_REVIEW" and w.review.editable,
        timeout=120000,
    )
    assert {sd.summary.id: sd.session.labels for sd in w.review.series}.keys() == edits.keys()
    assert all(np.array_equal(sd.session.labels, edits[sd.summary.id]) for sd in w.review.series)
    assert client.study(first).state == "PENDING_REVIEW"
    w.close()


def test_late_images_after_corrections_offer_a_new_draft(
    qtbot, workflow_node_factory, tmp_path: Path, monkeypatch
) -> None:
    """The rest of the study arrives while the radiologist corrects it: the station offers a new draft over
    every image, which then opens for review (real node, SYNTHETIC phantom)."""
    import pydicom

    from tests.workflow_fixtures import phantom_series, send_files

    running = workflow_node_factory()
    files, _ph = phantom_series(tmp_path / "late", 6464, n_slices=8)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    send_files(running.node.port, files[:4])
    study_id = int(running.wait_state(uid, {"PENDING_REVIEW"})["id"])
    w = open_window(qtbot, running)
    wait_worklist(qtbot, w)
    open_row(qtbot, w, study_id)
    paint_stroke(qtbot, w, row=20)
    w.autosave()
    qtbot.waitUntil(lambda: not w.review.modified and not w.writer.busy, timeout=60000)
    send_files(running.node.port, files)  # the rest arrives after the corrections were saved

    def flagged() -> bool:
        detail = running.get(f"/api/v1/studies/{study_id}").json()
        return bool(detail["series"][0]["changed_since_draft"])

    qtbot.waitUntil(flagged, timeout=180000)
    asked: list[str] = []

    def yes(*args, **kwargs):
        asked.append(str(args[2]))
        return QMessageBox.Yes

    monkeypatch.setattr(QMessageBox, "question", yes)
    w._load_study(study_id)  # opening always reloads from the node: it offers the new draft
    qtbot.waitUntil(
        lambda: (
            w.review.current is not None
            and w.review.current.session.n_slices == 8
            and not w.review.current.summary.changed_since_draft
            and w.review.editable
        ),
        timeout=180000,
    )
    assert asked and "arrived after its draft" in asked[0]
    assert not w.review.acts["resegment"].isEnabled()
    w.close()
