"""The worklist: studies pending review (or in another state), refreshed from the node.

Oldest first by the time the node received them (to the second). Double-click or Enter opens a study. Every
cell is plain text (``QTableWidgetItem``); tooltips are escaped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QKeyEvent
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from review_station.domain import StudySummary
from review_station.text import dicom_date, local_time, person_name, plain_tooltip

log = logging.getLogger(__name__)

STATES = (
    "PENDING_REVIEW",
    "APPROVED",
    "EXPORTED",
    "REJECTED",
    "FAILED",
    "SEGMENTING",
    "COMPLETE",
    "RECEIVING",
)
COLUMNS = (
    "Patient", "Patient ID", "Study", "Date", "Series", "Model", "Received", "In progress", "Approved by", "State",
)  # fmt: skip
RECEIVED = COLUMNS.index("Received")


class StudyTable(QTableWidget):
    """The table of studies; Enter (or Return) on a row asks to open it."""

    enterPressed = pyqtSignal()

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        if event is not None and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not event.modifiers():
            self.enterPressed.emit()
            event.accept()
            return
        super().keyPressEvent(event)


class WorklistWidget(QWidget):
    """Table of studies with a state filter, a refresh button and an auto-refresh timer."""

    openRequested = pyqtSignal(int)  # study id
    refreshRequested = pyqtSignal(object)  # state filter or None for all

    def __init__(self, parent: QWidget | None = None, auto_refresh_s: int = 30) -> None:
        super().__init__(parent)
        self.studies: list[StudySummary] = []
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        self.filter = QComboBox()
        self.filter.addItem("Pending review", "PENDING_REVIEW")
        for s in STATES[1:]:
            self.filter.addItem(s.replace("_", " ").capitalize(), s)
        self.filter.addItem("All studies", None)
        self.filter.currentIndexChanged.connect(lambda _i: self.request_refresh())
        top.addWidget(self.filter)
        self.refresh_button = QPushButton("Refresh (F5)")
        self.refresh_button.clicked.connect(self.request_refresh)
        top.addWidget(self.refresh_button)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self._open_selected)
        top.addWidget(self.open_button)
        top.addStretch(1)
        self.status = QLabel("")
        top.addWidget(self.status)
        lay.addLayout(top)
        self.table = StudyTable(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(RECEIVED, Qt.SortOrder.AscendingOrder)  # oldest first
        vh, hh = self.table.verticalHeader(), self.table.horizontalHeader()
        assert vh is not None and hh is not None
        vh.setVisible(False)
        hh.setSectionResizeMode(QHeaderView.ResizeToContents)
        hh.setSectionResizeMode(2, QHeaderView.Stretch)
        self.table.cellDoubleClicked.connect(lambda row, _col: self._open_row(row))
        self.table.enterPressed.connect(self._open_selected)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        lay.addWidget(self.table)
        self.message = QLabel("")
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.message)
        self.timer = QTimer(self)
        self.timer.setInterval(max(auto_refresh_s, 5) * 1000)
        self.timer.timeout.connect(self.request_refresh)
        self._selection_changed()

    @property
    def state_filter(self) -> str | None:
        """The chosen state, or None for every study."""
        return self.filter.currentData()

    def request_refresh(self) -> None:
        """Ask the main window to reload the list."""
        self.status.setText("loading…")
        self.refreshRequested.emit(self.state_filter)

    def set_studies(self, studies: Sequence[StudySummary]) -> None:
        """Show ``studies`` (keeping the selected study selected)."""
        selected = self.selected_id()
        self.studies = list(studies)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.studies))
        for r, s in enumerate(self.studies):
            cells = (
                person_name(s.PatientName), s.PatientID, s.StudyDescription, dicom_date(s.StudyDate),
                str(s.series_count), s.models_text, local_time(s.received_at), s.in_progress_by or "",
                s.approved_by or "", s.state,
            )  # fmt: skip
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, s.id)
                if s.state == "FAILED" and s.failure_reason:
                    item.setToolTip(plain_tooltip(s.failure_reason))
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)  # by the header's sort column: Received, oldest first, unless changed
        n = len(self.studies)
        self.status.setText(f"{n} {'study' if n == 1 else 'studies'} — {datetime.now():%H:%M:%S}")
        self.message.setStyleSheet("")
        self.message.setText("" if self.studies else "No study in this state.")
        if selected is not None:
            self.select_study(selected)
        self._selection_changed()

    def set_error(self, text: str) -> None:
        """Show why the list could not be loaded (the old rows stay)."""
        self.status.setText("not updated")
        self.message.setStyleSheet("color: #b00")
        self.message.setText(text)

    def clear(self, text: str = "") -> None:
        """No rows (e.g. after connecting to another node)."""
        self.studies = []
        self.table.setRowCount(0)
        self.status.setText("")
        self.message.setStyleSheet("")
        self.message.setText(text)
        self._selection_changed()

    def selected_id(self) -> int | None:
        """Study id of the selected row."""
        model = self.table.selectionModel()
        rows = model.selectedRows() if model is not None else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def row_of(self, study_id: int) -> int | None:
        """Table row showing ``study_id``."""
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == study_id:
                return r
        return None

    def select_study(self, study_id: int) -> None:
        """Select the row of ``study_id`` if shown."""
        r = self.row_of(study_id)
        if r is not None:
            self.table.selectRow(r)

    def _selection_changed(self) -> None:
        self.open_button.setEnabled(self.selected_id() is not None)

    def _open_selected(self) -> None:
        if (sid := self.selected_id()) is not None:
            self.openRequested.emit(sid)

    def _open_row(self, row: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.openRequested.emit(int(item.data(Qt.ItemDataRole.UserRole)))
