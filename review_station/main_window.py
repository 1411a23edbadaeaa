"""Main window: worklist ⇄ review page, menus, status bar with progress, and the node conversations.

Every call to the node runs in a :class:`~review_station.workers.TaskRunner` thread; results come back on the
UI thread. A failed decision leaves the edits where they are, with the reason in a dialog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5.QtCore import Qt
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (
    QAction,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QWidget,
)

from review_station import stats
from review_station.client import AuthError, NodeClient, NodeError
from review_station.dialogs import ApproveDialog, RejectDialog, StatisticsDialog, TokenDialog
from review_station.domain import Segment, SeriesSummary, StudySummary, Volume
from review_station.editing import EditSession
from review_station.local import load_local
from review_station.review_page import ReviewPage, SeriesData
from review_station.workers import Progress, TaskRunner
from review_station.worklist import WorklistWidget

log = logging.getLogger(__name__)

LoadedSeries = tuple[SeriesSummary, Volume, np.ndarray, list[Segment]]


def study_title(s: StudySummary) -> str:
    """Rich-text heading of a study: patient, description, date."""
    name = s.PatientName.replace("^", ", ", 1).replace("^", " ")
    return f"<b>{name or 'Unnamed'}</b> ({s.PatientID})<br>{s.StudyDescription or 'Study'} {s.StudyDate}"


class MainWindow(QMainWindow):
    """The review station's window. ``client=None`` runs offline (local files only)."""

    def __init__(self, client: NodeClient | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.runner = TaskRunner(self)
        self.open_study_id: int | None = None
        self.local_path: Path | None = None
        self.last_error: QMessageBox | None = None
        self.dialog: Any = None
        self._refreshing = False
        self._close_confirmed = False
        self.resize(1400, 900)
        self.stack = QStackedWidget()
        self.worklist = WorklistWidget()
        self.review = ReviewPage()
        self.stack.addWidget(self.worklist)
        self.stack.addWidget(self.review)
        self.setCentralWidget(self.stack)
        self._make_status_bar()
        self._make_menus()
        self.worklist.refreshRequested.connect(self.refresh_worklist)
        self.worklist.openRequested.connect(self.open_study)
        self.review.message.connect(lambda t: self._say(t, 6000))
        self.review.editsChanged.connect(self._update_title)
        self.review.approveRequested.connect(self.ask_approve)
        self.review.rejectRequested.connect(self.ask_reject)
        self.review.statisticsRequested.connect(self._statistics_requested)
        self.review.canvas.cursorInfo.connect(self.cursor_label.setText)
        self.runner.busyChanged.connect(self._busy_changed)
        self.show_worklist()
        self._update_title()

    # ---- chrome ----------------------------------------------------------------------------------
    def _make_status_bar(self) -> None:
        sb = self.statusBar()
        assert sb is not None
        self.cursor_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.node_label = QLabel(self.client.base_url if self.client else "offline")
        sb.addPermanentWidget(self.cursor_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.node_label)

    def _action(self, text: str, slot: Callable[[], Any], keys: tuple[str, ...] = ()) -> QAction:
        a = QAction(text, self)
        if keys:
            a.setShortcuts([QKeySequence(k) for k in keys])
        a.triggered.connect(lambda _=False: slot())
        self.addAction(a)
        return a

    def _make_menus(self) -> None:
        acts = self.review.acts
        for a in acts.values():
            self.addAction(a)
        self.act_refresh = self._action("Refresh worklist", self.worklist.request_refresh, ("F5",))
        self.act_worklist = self._action("Back to worklist", self.show_worklist, ("Ctrl+L",))
        self.act_review = self._action("Show open study", self.show_review, ("Ctrl+R",))
        self.act_open_local = self._action("Open local files…", self.ask_open_local)
        self.act_save_local = self._action("Save labels as…", self.ask_save_local, ("Ctrl+S",))
        self.act_connect = self._action("Connect to node…", lambda: self.ask_token(""))
        self.act_quit = self._action("Quit", self.close, ("Ctrl+Q",))
        mb = self.menuBar()
        assert mb is not None

        def menu(title: str, items: tuple[QAction | None, ...]) -> None:
            m = mb.addMenu(title)
            assert m is not None
            for a in items:
                if a is None:
                    m.addSeparator()
                else:
                    m.addAction(a)

        def named(*names: str | None) -> tuple[QAction | None, ...]:
            return tuple(None if n is None else acts[n] for n in names)

        menu("&File", (self.act_refresh, self.act_worklist, self.act_review, self.act_connect, None,
                       self.act_open_local, self.act_save_local, None, self.act_quit))  # fmt: skip
        menu("&Edit", named("undo", "redo"))
        menu("&View", named("overlay", "fit", "reset_window", "goto"))
        menu("&Tools", named("tool_paint", "tool_erase", "tool_pan", "tool_zoom", None, "brush_bigger",
                             "brush_smaller", None, "grow", "shrink", "fill_holes", "remove_islands", None,
                             "interpolate", "interpolate_block", "propagate_back", "propagate_forward", None,
                             "statistics"))  # fmt: skip
        menu("&Study", named("approve", "reject"))

    def _say(self, text: str, msecs: int = 0) -> None:
        sb = self.statusBar()
        if sb is not None:
            sb.showMessage(text, msecs)

    def _update_title(self) -> None:
        where = self.client.base_url if self.client else "offline"
        mod = " — edited" if self.review.modified else ""
        self.setWindowTitle(f"Laurel review — {where}{mod}")
        self.act_save_local.setEnabled(self.review.current is not None)
        self.act_review.setEnabled(self.review.current is not None)
        self.act_refresh.setEnabled(self.client is not None)
        self.act_connect.setEnabled(self.client is not None)

    def _busy_changed(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)
            self.progress.setFormat("working…")
        self.worklist.refresh_button.setEnabled(not busy)

    def _progress(self, text: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(text)
        self._say(text)

    def show_error(self, title: str, error: BaseException | str) -> QMessageBox:
        """A non-blocking error dialog (kept as ``last_error``)."""
        text = str(error) if isinstance(error, BaseException) else error
        if isinstance(error, BaseException) and not isinstance(error, NodeError | ValueError | OSError):
            log.exception("unexpected %s", type(error).__name__, exc_info=error)
            text = f"Unexpected error ({type(error).__name__}): {error}"
        box = QMessageBox(QMessageBox.Critical, title, text[:1].upper() + text[1:], QMessageBox.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.last_error = box
        box.open()
        self._say(f"{title}: {text}", 10000)
        return box

    # ---- pages -----------------------------------------------------------------------------------
    def show_worklist(self) -> None:
        """Worklist page (the open study stays open)."""
        self.stack.setCurrentWidget(self.worklist)
        self.review.set_actions_enabled(False)
        self.worklist.table.setFocus()

    def show_review(self) -> None:
        """Review page of the open study."""
        if self.review.current is None:
            return
        self.stack.setCurrentWidget(self.review)
        self.review.set_actions_enabled(True)
        self.review.canvas.setFocus()

    # ---- connection ------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the node and the token, then load the worklist."""
        if self.client is None:
            self.worklist.set_error("Offline: no node. Open local files from the File menu.")
            return
        if not self.client.has_token:
            self.ask_token("Enter your operator token to connect.")
            return
        client = self.client
        self.worklist.status.setText("connecting…")
        self.runner.start(
            lambda _p: client.check(),
            on_done=lambda _h: self._connected(),
            on_failed=self._connection_failed,
            name="check",
        )

    def _connected(self) -> None:
        self.worklist.request_refresh()
        self.worklist.timer.start()  # auto-refresh while the station runs

    def _connection_failed(self, exc: BaseException) -> None:
        self.worklist.set_error(str(exc))
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))
        else:
            self.show_error("Cannot connect to the node", exc)

    def ask_token(self, message: str) -> None:
        """Ask for the node URL and token (non-blocking)."""
        url = self.client.base_url if self.client else "http://127.0.0.1:8080"
        dlg = TokenDialog(url, message, self)
        dlg.accepted.connect(lambda: self._token_given(dlg.url.text(), dlg.token.text()))
        self.dialog = dlg
        dlg.open()

    def _token_given(self, url: str, token: str) -> None:
        try:
            self.client = NodeClient(url, token.strip() or None)
        except ValueError as exc:
            self.show_error("Cannot connect", exc)
            return
        self.node_label.setText(self.client.base_url)
        self._update_title()
        self.start()

    # ---- worklist --------------------------------------------------------------------------------
    def refresh_worklist(self, state: str | None = None) -> None:
        """Reload the worklist in the background."""
        if self.client is None or self._refreshing:
            return
        client = self.client
        self._refreshing = True
        self.runner.start(
            lambda _p: client.studies(state),
            on_done=self._worklist_loaded,
            on_failed=self._worklist_failed,
            name="studies",
        )

    def _worklist_loaded(self, studies: list[StudySummary]) -> None:
        self._refreshing = False
        self.worklist.set_studies(studies)

    def _worklist_failed(self, exc: BaseException) -> None:
        self._refreshing = False
        self.worklist.set_error(str(exc))
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))

    # ---- open ------------------------------------------------------------------------------------
    def open_study(self, study_id: int) -> None:
        """Load a study's drafts and show it (asks first if the open study has edits not yet sent)."""
        if self.client is None:
            return
        if study_id == self.open_study_id and self.review.current is not None:
            self.show_review()
            return
        if self.review.modified:
            box = QMessageBox(
                QMessageBox.Warning,
                "Discard edits?",
                "The open study has corrections that were not approved. Discard them and open another study?",
                QMessageBox.Discard | QMessageBox.Cancel,
                self,
            )
            box.setDefaultButton(QMessageBox.Cancel)
            box.finished.connect(lambda r: self._load_study(study_id) if r == QMessageBox.Discard else None)
            self.dialog = box
            box.open()
            return
        self._load_study(study_id)

    def _load_study(self, study_id: int) -> None:
        assert self.client is not None
        client = self.client

        def work(progress: Progress) -> tuple[StudySummary, list[LoadedSeries]]:
            progress("reading the study", 0, 0)
            study = client.study(study_id)
            todo = [s for s in study.series if s.has_draft or s.has_corrected]
            out = []
            for i, s in enumerate(todo):
                progress(f"series {i + 1}/{len(todo)}: image", 3 * i, 3 * len(todo))
                vol = client.volume(s.id)
                progress(f"series {i + 1}/{len(todo)}: labels", 3 * i + 1, 3 * len(todo))
                labels = client.labels(s.id, "corrected" if s.has_corrected else "draft")
                progress(f"series {i + 1}/{len(todo)}: muscles", 3 * i + 2, 3 * len(todo))
                out.append((s, vol, labels, client.segments(s.id)))
            return study, out

        self._say(f"opening study {study_id}…")
        self.runner.start(
            work, on_done=self._study_loaded, on_failed=lambda e: self._open_failed(e),
            on_progress=self._progress, name="open",
        )  # fmt: skip

    def _open_failed(self, exc: BaseException) -> None:
        self.show_error("Cannot open the study", exc)
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))

    def _study_loaded(self, result: tuple[StudySummary, list[LoadedSeries]]) -> None:
        study, loaded = result
        series = []
        for summary, vol, labels, segments in loaded:
            if labels.shape != vol.image.shape:
                self.show_error(
                    "Cannot open the study",
                    f"series {summary.id}: labels {labels.shape} and image {vol.image.shape} differ in shape",
                )
                return
            series.append(SeriesData(summary, EditSession(vol.image, labels, vol.spacing), segments))
        if not series:
            self.show_error("Nothing to review", "this study has no segmentation draft (yet)")
            return
        self.open_study_id = study.id
        self.local_path = None
        editable = study.state == "PENDING_REVIEW"
        self.review.load(study, series, study_title(study), editable)
        self._say(f"opened study {study.id}" + ("" if editable else f" (read only: {study.state})"), 5000)
        self.show_review()
        self._update_title()

    # ---- offline files ---------------------------------------------------------------------------
    def open_local(self, volume: Path, labels: Path | None = None) -> None:
        """Open a volume (.npy) and optionally labels (.npy/.npz) from disk, offline (no approval)."""
        try:
            vol, lab, segments = load_local(volume, labels)
        except (OSError, ValueError) as exc:
            self.show_error("Cannot open the files", exc)
            return
        summary = SeriesSummary(0, "", volume.name, "MR", vol.image.shape[0], None, None, "", None, True, False)
        self.open_study_id = None
        self.local_path = labels
        self.review.load(None, [SeriesData(summary, EditSession(vol.image, lab, vol.spacing), segments)],
                         f"<b>{volume.name}</b> (local file)", editable=True)  # fmt: skip
        self.show_review()
        self._update_title()

    def ask_open_local(self) -> None:
        """Choose a volume and labels to open offline."""
        vol, _ = QFileDialog.getOpenFileName(self, "Volume (.npy, float (z, y, x))", "", "NumPy (*.npy)")
        if not vol:
            return
        lab, _ = QFileDialog.getOpenFileName(self, "Labels (optional)", str(Path(vol).parent), "Labels (*.npy *.npz)")
        self.open_local(Path(vol), Path(lab) if lab else None)

    def ask_save_local(self) -> None:
        """Save the current series' labels to a .npy file."""
        if self.review.current is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", "labels.npy", "NumPy (*.npy)")
        if path:
            self.save_labels(Path(path))

    def save_labels(self, path: Path) -> None:
        """Write the current series' labels as uint8 .npy (through a temporary file)."""
        if (cur := self.review.current) is None:
            return
        tmp = path.with_name(path.name + ".part")
        try:
            with tmp.open("wb") as fh:
                np.save(fh, cur.session.labels, allow_pickle=False)
            tmp.replace(path)
        except OSError as exc:
            self.show_error("Cannot save the labels", exc)
            return
        if self.review.study is None:
            cur.session.mark_saved()
        self._say(f"labels saved to {path}", 6000)
        self._update_title()

    # ---- decide ----------------------------------------------------------------------------------
    def _decidable(self) -> StudySummary | None:
        study = self.review.study
        if self.client is None or study is None or study.state != "PENDING_REVIEW" or self.runner.busy:
            return None
        return study

    def ask_approve(self) -> None:
        """Open the approval confirmation (nothing is sent until its Approve button is pressed)."""
        if (study := self._decidable()) is None:
            return
        lines = []
        for s in self.review.series:
            edits = "corrected" if s.session.modified or s.summary.has_corrected else "draft unchanged"
            lines.append(f"{s.summary.title} — {edits}")
        dlg = ApproveDialog(study_title(study), lines, self)
        dlg.accepted.connect(lambda: self.approve(dlg.comment_text()))
        self.dialog = dlg
        dlg.open()

    def approve(self, comment: str | None) -> None:
        """Upload the labels of every series, then approve (in the background; edits kept on failure)."""
        if (study := self._decidable()) is None:
            return
        assert self.client is not None
        client = self.client
        uploads = [(s.summary.id, s.session.labels.copy()) for s in self.review.series]
        self.review.set_read_only(True)

        def work(progress: Progress) -> dict[str, Any]:
            n = len(uploads)
            for i, (series_id, labels) in enumerate(uploads):
                progress(f"uploading labels {i + 1}/{n}", i, n + 1)
                client.put_labels(series_id, labels)
            progress("approving", n, n + 1)
            return client.approve(study.id, comment)

        self.runner.start(work, on_done=lambda r: self._decided(study, r, "APPROVED", uploads),
                          on_failed=lambda e: self._decision_failed("Approval failed", e),
                          on_progress=self._progress, name="approve")  # fmt: skip

    def ask_reject(self) -> None:
        """Open the rejection dialog (a reason is required)."""
        if (study := self._decidable()) is None:
            return
        dlg = RejectDialog(study_title(study), self)
        dlg.accepted.connect(lambda: self.reject_study(dlg.reason_text()))
        self.dialog = dlg
        dlg.open()

    def reject_study(self, reason: str) -> None:
        """Send the rejection in the background."""
        if (study := self._decidable()) is None or not reason.strip():
            return
        assert self.client is not None
        client = self.client
        self.review.set_read_only(True)

        def work(progress: Progress) -> dict[str, Any]:
            progress("rejecting", 0, 0)
            return client.reject(study.id, reason)

        self.runner.start(work,
                          on_done=lambda r: self._decided(study, r, "REJECTED", []),
                          on_failed=lambda e: self._decision_failed("Rejection failed", e),
                          on_progress=self._progress, name="reject")  # fmt: skip

    def _decided(
        self,
        study: StudySummary,
        result: dict[str, Any],
        default_state: str,
        uploads: list[tuple[int, np.ndarray]],
    ) -> None:
        for s, (_sid, sent) in zip(self.review.series, uploads, strict=False):
            s.session.mark_saved(sent)  # what the node holds now
        state = str(result.get("state") or default_state)
        self.review.set_state(replace(study, state=state))
        extra = ""
        scores = [d.get("overall") for d in (result.get("dice") or {}).values() if isinstance(d, dict)]
        scores = [float(v) for v in scores if isinstance(v, int | float)]
        if scores:
            extra = " — agreement with the draft (Dice) " + ", ".join(f"{v:.3f}" for v in scores)
        self._say(f"study {study.id}: {state}{extra}", 15000)
        self._update_title()
        self.show_worklist()
        self.worklist.request_refresh()

    def _decision_failed(self, title: str, exc: BaseException) -> None:
        self.review.set_read_only(False)
        self.show_error(title, f"{exc}\n\nYour corrections are kept; nothing was approved.")
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))

    # ---- statistics ------------------------------------------------------------------------------
    def _statistics_requested(self) -> None:
        self.show_statistics()

    def show_statistics(self) -> StatisticsDialog | None:
        """Per-muscle statistics of the series on the canvas."""
        if (cur := self.review.current) is None:
            return None
        s = cur.session
        rows = stats.muscle_statistics(s.image, s.labels, s.spacing, cur.segments)
        dlg = StatisticsDialog(cur.summary.title, rows, self)
        dlg.exported.connect(lambda p: self._say(f"statistics written to {p}", 6000))
        self.dialog = dlg
        dlg.open()
        return dlg

    # ---- closing ---------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.review.modified and not self._close_confirmed:
            event.ignore()
            what = "corrections that were not approved" if self.review.study else "labels that were not saved"
            box = QMessageBox(
                QMessageBox.Warning, "Quit?", f"The open study has {what}. Quit and lose them?",
                QMessageBox.Discard | QMessageBox.Cancel, self,
            )  # fmt: skip
            box.setDefaultButton(QMessageBox.Cancel)
            box.finished.connect(lambda r: self._quit_confirmed() if r == QMessageBox.Discard else None)
            self.dialog = box
            box.open()
            return
        self.worklist.timer.stop()
        self.runner.wait(10000)
        if self.client is not None:
            self.client.close()
        event.accept()

    def _quit_confirmed(self) -> None:
        self._close_confirmed = True
        self.close()
