"""Dialogs of the review station: approve, reject, token, statistics; all open non-blocking (``open()``).

Patient and study text is shown as plain text (``Qt.PlainText``), never as rich text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QShortcut,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from review_station.panel import bold_label, plain_label
from review_station.stats import MuscleStats, write_csv
from review_station.text import Heading, window_title

log = logging.getLogger(__name__)

MAX_TEXT = 2000  # the node's limit for a comment or a reason


def _who(heading: Heading) -> QLabel:
    """Patient, patient ID and study: plain text (DICOM strings are never read as markup)."""
    who = plain_label(heading.lines)
    who.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return who


class ApproveDialog(QDialog):
    """Confirm the approval of a study; the comment is optional. Cancel is the default button."""

    def __init__(
        self, heading: Heading, series_lines: Sequence[str], parent: QWidget | None = None, *, then_next: bool = False
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Approve study")
        lay = QVBoxLayout(self)
        lay.addWidget(bold_label("Approve this study?"))
        self.who = _who(heading)
        lay.addWidget(self.who)
        lay.addWidget(QLabel("These labels will be stored as approved, sent to the PACS and used to teach the model:"))
        self.series = plain_label("\n".join(f"• {line}" for line in series_lines))
        lay.addWidget(self.series)
        if then_next:
            lay.addWidget(QLabel("Then the next study pending review opens."))
        lay.addWidget(QLabel("Comment (optional):"))
        self.comment = QPlainTextEdit()
        self.comment.setPlaceholderText("e.g. corrected the soleus boundary on slices 10-14")
        self.comment.setFixedHeight(80)
        self.comment.setTabChangesFocus(True)
        lay.addWidget(self.comment)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.approve_button = QPushButton("Approve && open next (Alt+A)" if then_next else "Approve (Alt+A)")
        self.buttons.addButton(self.approve_button, QDialogButtonBox.AcceptRole)
        shortcut = QShortcut(QKeySequence("Alt+A"), self)  # explicit: button mnemonics are not on every platform
        shortcut.activated.connect(self.approve_button.click)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.comment.textChanged.connect(
            lambda: self.approve_button.setEnabled(len(self.comment.toPlainText()) <= MAX_TEXT)
        )
        lay.addWidget(self.buttons)
        cancel = self.buttons.button(QDialogButtonBox.Cancel)
        assert cancel is not None
        cancel.setDefault(True)
        self.approve_button.setAutoDefault(False)

    def comment_text(self) -> str | None:
        """The comment, or None when empty."""
        text = self.comment.toPlainText().strip()
        return text or None


class RejectDialog(QDialog):
    """Reject a study: a reason is required (the Reject button stays disabled without one)."""

    def __init__(self, heading: Heading, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Reject study")
        lay = QVBoxLayout(self)
        lay.addWidget(bold_label("Reject this study?"))
        self.who = _who(heading)
        lay.addWidget(self.who)
        lay.addWidget(QLabel("Nothing of it will be sent to the PACS or learnt from."))
        lay.addWidget(QLabel("Reason (required):"))
        self.reason = QPlainTextEdit()
        self.reason.setPlaceholderText("e.g. wrong anatomy, motion artefacts, not a muscle study")
        self.reason.setFixedHeight(80)
        self.reason.setTabChangesFocus(True)
        lay.addWidget(self.reason)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.reject_button = QPushButton("Reject")
        self.buttons.addButton(self.reject_button, QDialogButtonBox.AcceptRole)
        self.reject_button.setEnabled(False)
        self.reason.textChanged.connect(lambda: self.reject_button.setEnabled(0 < len(self.reason_text()) <= MAX_TEXT))
        self.buttons.accepted.connect(self._accept_if_reason)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

    def reason_text(self) -> str:
        """The stripped reason."""
        return self.reason.toPlainText().strip()

    def _accept_if_reason(self) -> None:
        if 0 < len(self.reason_text()) <= MAX_TEXT:
            self.accept()


class AmendDialog(RejectDialog):
    """Reopen an approved study for correction: a reason is required (it goes into the audit log)."""

    def __init__(self, heading: Heading, parent: QWidget | None = None) -> None:
        super().__init__(heading, parent)
        self.setWindowTitle("Amend approved study")
        labels = self.findChildren(QLabel)
        labels[0].setText("Amend this approved study?")
        for label in labels:
            if label.text().startswith("Nothing of it"):
                label.setText(
                    "It opens again with the approved labels. Your next approval sends a new SEG to the PACS\n"
                    "that supersedes the approved one, and the model learns from it."
                )
        self.reason.setPlaceholderText("e.g. a muscle was missed, wrong side")
        self.reject_button.setText("Amend")


class TokenDialog(QDialog):
    """Ask for the node address and the operator's token (shown when none is given or it was refused)."""

    def __init__(self, url: str, message: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to the node")
        form = QFormLayout(self)
        if message:
            msg = QLabel(message)
            msg.setTextFormat(Qt.TextFormat.PlainText)
            msg.setWordWrap(True)
            form.addRow(msg)
        self.url = QLineEdit(url)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("operator token from `laurel token create`")
        form.addRow("Node", self.url)
        form.addRow("Token", self.token)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


def _fmt(v: float | int | str) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.1f}"
    return str(v)


class StatisticsDialog(QDialog):
    """Per-muscle statistics of the current series with CSV export."""

    exported = pyqtSignal(str)
    COLUMNS = (
        ("Muscle", "name"), ("Slices", "slices"), ("Voxels", "voxels"), ("Volume (ml)", "volume_ml"),
        ("Mean", "mean"), ("SD", "std"), ("Min", "p0"), ("P25", "p25"), ("Median", "p50"), ("P75", "p75"),
        ("Max", "p100"),
    )  # fmt: skip

    def __init__(self, title: str, stats: Sequence[MuscleStats], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(window_title(f"Statistics — {title}"))
        self.stats = list(stats)
        self.resize(1180, 500)
        lay = QVBoxLayout(self)
        self.table = QTableWidget(len(self.stats), len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels([c for c, _ in self.COLUMNS])
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        for r, row in enumerate(self.stats):
            for c, (_, attr) in enumerate(self.COLUMNS):
                item = QTableWidgetItem(_fmt(getattr(row, attr)))
                if attr != "name":
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        hh = self.table.horizontalHeader()
        assert hh is not None
        hh.setSectionResizeMode(QHeaderView.ResizeToContents)
        hh.setStretchLastSection(True)
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.export_button = QPushButton("Export CSV…")
        buttons.addButton(self.export_button, QDialogButtonBox.ActionRole)
        self.export_button.clicked.connect(self._choose_file)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export statistics", "statistics.csv", "CSV (*.csv)")
        if path:
            self.export(Path(path))

    def export(self, path: Path) -> None:
        """Write the CSV to ``path`` (errors in a message box)."""
        try:
            write_csv(self.stats, path)
        except OSError as exc:
            QMessageBox.critical(self, "Export failed", f"Could not write {path}: {exc.strerror or exc}")
            return
        self.exported.emit(str(path))
