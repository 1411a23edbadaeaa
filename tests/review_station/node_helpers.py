"""Helpers of the review station tests that run against a REAL node (``tests/workflow_fixtures.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PyQt5.QtCore import Qt

from review_station.client import NodeClient
from review_station.main_window import MainWindow
from review_station.recovery import RecoveryStore


def open_window(qtbot, node: Any, token: str | None = None, **kwargs: Any) -> MainWindow:
    """A shown main window connected to ``node``."""
    w = MainWindow(NodeClient(node.url, token if token is not None else node.token), **kwargs)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    return w


def wait_worklist(qtbot, w: MainWindow) -> None:
    """Start the window and wait for the worklist rows."""
    w.start()
    qtbot.waitUntil(lambda: w.worklist.table.rowCount() > 0, timeout=60000)


def open_row(qtbot, w: MainWindow, study_id: int) -> None:
    """Double-click the worklist row of ``study_id`` and wait for the review page."""
    row = w.worklist.row_of(study_id)
    assert row is not None
    rect = w.worklist.table.visualItemRect(w.worklist.table.item(row, 0))
    qtbot.mouseClick(w.worklist.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(w.worklist.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    wait_open(qtbot, w, study_id)


def wait_open(qtbot, w: MainWindow, study_id: int) -> None:
    """Wait until ``study_id`` is on the review page."""
    qtbot.waitUntil(
        lambda: w.review.current is not None and w.open_study_id == study_id and not w.runner.busy, timeout=120000
    )
    assert w.stack.currentWidget() is w.review and w.last_error is None


def open_first_pending(qtbot, w: MainWindow) -> int:
    """Start, wait for the worklist, double-click the oldest pending study, wait for the review page."""
    wait_worklist(qtbot, w)
    study_id = w.worklist.studies[0].id
    open_row(qtbot, w, study_id)
    return study_id


def busiest(labels: np.ndarray, z: int) -> int:
    """The label value with the most pixels on slice ``z``."""
    values, counts = np.unique(labels[z][labels[z] > 0], return_counts=True)
    return int(values[np.argmax(counts)])


def store(tmp_path) -> RecoveryStore:
    """A recovery folder of the test."""
    return RecoveryStore(tmp_path / "kept")
