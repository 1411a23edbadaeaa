"""Acceptance: the review station against a REAL node API running in the test process.

Open a phantom study from the worklist, paint, erase, undo, redo, grow, interpolate, approve: the node
must hold exactly the edited labels. Needs the node-core fixture ``node_api`` (``tests/conftest.py``): an
object with ``url`` (the API's base URL) and ``token`` (a valid operator token), whose node holds at least
one phantom study in PENDING_REVIEW with a segmented series (a fresh node per test; a node shared by the
tests of this module needs two such studies: one is rejected, one approved). Everything else goes through
the HTTP API.
"""

from __future__ import annotations

import numpy as np
import pytest
from PyQt5.QtCore import Qt

pytest.importorskip("dicom_node.api.app", reason="the node API is not there yet")

from review_station.client import AUTH_MESSAGE, AuthError, NodeClient
from review_station.dialogs import ApproveDialog, RejectDialog, TokenDialog
from tests.review_station.node_helpers import busiest, open_first_pending, open_window
from tests.review_station.qt_helpers import drag

CTRL = Qt.KeyboardModifier.ControlModifier


def test_wrong_token_is_refused_with_the_agreed_message(qtbot, node) -> None:
    with pytest.raises(AuthError) as err:
        NodeClient(node.url, "lrl_not-a-token").studies()
    assert str(err.value) == AUTH_MESSAGE
    w = open_window(qtbot, node, token="lrl_not-a-token")
    w.start()
    qtbot.waitUntil(lambda: isinstance(w.dialog, TokenDialog), timeout=30000)
    assert "laurel token create" in w.worklist.message.text()


def test_refused_labels_keep_the_edits(qtbot, node) -> None:
    """A value the model does not know (200) is refused by the node (422): error dialog, edits kept."""
    w = open_window(qtbot, node)
    study_id = open_first_pending(qtbot, w)
    c = w.review.canvas
    s = w.review.current.session
    c.set_active(200)
    drag(qtbot, c, [(5, 5), (5, 15)])
    edited = s.labels.copy()
    assert (edited == 200).any()
    w.approve("should fail")
    qtbot.waitUntil(lambda: w.last_error is not None and not w.runner.busy, timeout=60000)
    assert "200" in w.last_error.text() and "kept" in w.last_error.text()
    np.testing.assert_array_equal(s.labels, edited)
    assert w.review.editable and w.review.study.state == "PENDING_REVIEW"
    assert NodeClient(node.url, node.token).study(study_id).state == "PENDING_REVIEW"
    s.undo()
    w.close()


def test_reject_needs_a_reason_and_reaches_the_node(qtbot, node) -> None:
    w = open_window(qtbot, node)
    study_id = open_first_pending(qtbot, w)
    w.review.acts["reject"].trigger()
    dlg = w.dialog
    assert isinstance(dlg, RejectDialog) and not dlg.reject_button.isEnabled()
    dlg.reason.setPlainText("e2e: motion artefacts")
    qtbot.mouseClick(dlg.reject_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.runner.busy and w.review.study.state != "PENDING_REVIEW", timeout=60000)
    assert w.last_error is None and w.review.study.state == "REJECTED"
    assert not w.review.acts["approve"].isEnabled()
    assert NodeClient(node.url, node.token).study(study_id).state == "REJECTED"
    w.close()


def test_review_edit_and_approve_sends_exactly_the_edited_labels(qtbot, node) -> None:
    w = open_window(qtbot, node)
    study_id = open_first_pending(qtbot, w)
    page, c = w.review, w.review.canvas
    s = page.current.session
    draft = s.labels.copy()
    z = c.z
    value = busiest(s.labels, z)
    page.panel.select_muscle(value)
    assert c.overlay.active == value
    h, wd = s.labels.shape[1:]

    # paint a stroke of the active muscle across the slice
    c.set_radius(3)
    drag(qtbot, c, [(h // 2, wd // 4), (h // 2, wd // 2)])
    assert (s.labels[z, h // 2, wd // 4 : wd // 2] == value).all()
    painted = s.labels.copy()

    # erase part of it (Ctrl = erase, as in Dafne)
    drag(qtbot, c, [(h // 2, wd // 4), (h // 2, wd // 3)], mods=CTRL)
    assert (s.labels[z, h // 2, wd // 4 : wd // 3] != value).all()
    erased = s.labels.copy()

    # undo (Ctrl+Z) and redo (Ctrl+Y)
    c.setFocus()
    qtbot.keyClick(c, Qt.Key.Key_Z, CTRL)
    np.testing.assert_array_equal(s.labels, painted)
    qtbot.keyClick(c, Qt.Key.Key_Y, CTRL)
    np.testing.assert_array_equal(s.labels, erased)

    # grow (G)
    n = int((s.labels[z] == value).sum())
    qtbot.keyClick(c, Qt.Key.Key_G)
    assert (s.labels[z] == value).sum() > n

    # interpolate (I): clear a muscle on a slice between two labelled ones, then redraw it
    present = [k for k in range(s.n_slices) if (s.labels[k] == value).any()]
    mid = next(k for k in present if k - 1 in present and k + 1 in present)
    c.set_slice(mid)
    page.acts["tool_erase"].trigger()
    c.set_radius(60)
    c.shape = "square"
    while (s.labels[mid] == value).any():  # each dab clears a 121-px square around a remaining pixel
        y, x = np.argwhere(s.labels[mid] == value)[0]
        drag(qtbot, c, [(int(y), int(x))])
    qtbot.keyClick(c, Qt.Key.Key_I)
    assert (s.labels[mid] == value).sum() > 0.5 * (draft[mid] == value).sum()
    edited = {sd.summary.id: sd.session.labels.copy() for sd in page.series}
    assert any(not np.array_equal(edited[sd.summary.id], draft) for sd in page.series)

    # approve: explicit click, confirmation dialog with a comment
    page.acts["approve"].trigger()
    dlg = w.dialog
    assert isinstance(dlg, ApproveDialog) and dlg.isVisible()
    dlg.comment.setPlainText("e2e: corrected by the test")
    qtbot.mouseClick(dlg.approve_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not w.runner.busy and page.study.state != "PENDING_REVIEW", timeout=120000)
    assert w.last_error is None, w.last_error.text() if w.last_error else ""
    assert page.study.state == "APPROVED" and not page.modified

    client = NodeClient(node.url, node.token)
    assert client.study(study_id).state in ("APPROVED", "EXPORTED")
    for series_id, labels in edited.items():
        np.testing.assert_array_equal(client.labels(series_id, "corrected"), labels)
    w.close()
