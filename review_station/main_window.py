"""Main window: worklist ⇄ review page, menus, status bar with progress, connection to the node.

Every call to the node runs off the UI thread: reads on ``runner``, writes (corrections, decisions) one at a
time and in order on ``writer``. Opening, saving and switching studies live in
:class:`~review_station.study_session.StudySession`, decisions in :class:`~review_station.decisions.Decisions`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5.QtCore import QSettings, Qt, QTimer
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (
    QAction,
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QWidget,
)

from review_station import preferences, stats
from review_station.client import AuthError, NodeClient, NodeError
from review_station.decisions import Decisions
from review_station.dialogs import StatisticsDialog, TokenDialog
from review_station.domain import SeriesSummary, StudySummary
from review_station.editing import EditSession
from review_station.local import load_local
from review_station.recovery import RecoveryStore
from review_station.review_page import ReviewPage, SeriesData
from review_station.study_session import StudySession
from review_station.text import Heading, window_title
from review_station.workers import TaskRunner
from review_station.worklist import WorklistWidget

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1400, 900)
AUTOSAVE_MS = 30_000


def message_box(parent: QWidget, icon: QMessageBox.Icon, title: str, text: str, buttons: Any) -> QMessageBox:
    """A non-blocking message box whose text is plain text (it may quote the node or DICOM strings)."""
    box = QMessageBox(icon, title, "", buttons, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setText(text)
    return box


class MainWindow(StudySession, Decisions, QMainWindow):
    """The review station's window. ``client=None`` runs offline (local files only)."""

    def __init__(
        self,
        client: NodeClient | None = None,
        parent: QWidget | None = None,
        *,
        settings: QSettings | None = None,
        recovery: RecoveryStore | None = None,
        autosave_ms: int = AUTOSAVE_MS,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.study_client: NodeClient | None = None  # the node the open study came from
        self.settings = settings
        self.recovery = recovery or RecoveryStore()
        self.runner = TaskRunner(self)
        self.writer = TaskRunner(self, max_threads=1)  # saves and decisions, in order
        self.open_study_id: int | None = None
        self.local_path: Path | None = None
        self.last_error: QMessageBox | None = None
        self.dialog: Any = None
        self.epoch = 0  # bumped when the node changes: answers of the old node are dropped
        self._refreshing = False
        self._close_confirmed = False
        self._closing = False
        self.fit_to_screen()
        self.stack = QStackedWidget()
        self.worklist = WorklistWidget()
        self.review = ReviewPage()
        self.stack.addWidget(self.worklist)
        self.stack.addWidget(self.review)
        self.setCentralWidget(self.stack)
        self._make_status_bar()
        self._make_menus()
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(max(int(autosave_ms), 100))
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()
        self.worklist.refreshRequested.connect(self.refresh_worklist)
        self.worklist.openRequested.connect(self.open_study)
        self.review.message.connect(lambda t: self._say(t, 6000))
        self.review.editsChanged.connect(self._update_title)
        self.review.approveRequested.connect(lambda: self.ask_approve(then_next=False))
        self.review.approveNextRequested.connect(lambda: self.ask_approve(then_next=True))
        self.review.rejectRequested.connect(self.ask_reject)
        self.review.amendRequested.connect(self.ask_amend)
        self.review.resegmentRequested.connect(self.ask_resegment)
        self.review.statisticsRequested.connect(self._statistics_requested)
        self.review.canvas.cursorInfo.connect(self.cursor_label.setText)
        for runner in (self.runner, self.writer):
            runner.busyChanged.connect(self._busy_changed)
        if settings is not None:
            preferences.restore(self, settings)
        self.show_worklist()
        self._update_title()

    def fit_to_screen(self) -> None:
        """The default size, or less on a smaller screen (e.g. 1366×768): the window always fits."""
        w, h = DEFAULT_SIZE
        screen = QApplication.primaryScreen()
        if screen is not None:
            avail = screen.availableGeometry()
            if avail.width() >= 640 and avail.height() >= 480:
                w, h = min(w, avail.width()), min(h, avail.height() - 30)
        self.resize(w, h)

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
        self.act_save_node = self._action("Save corrections to the node", lambda: self.save_to_node("save"))
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

        menu("&File", (self.act_refresh, self.act_worklist, self.act_review, self.act_save_node, None,
                       self.act_connect, None, self.act_open_local, self.act_save_local, None,
                       self.act_quit))  # fmt: skip
        menu("&Edit", named("undo", "redo"))
        menu("&View", named("overlay", "fit", "reset_window", "next_preset", "goto", None, "show_draft",
                            "show_difference", "reformats"))  # fmt: skip
        menu("&Muscles", named("next_muscle", "previous_muscle", "lock", None,
                               *(f"muscle_{i}" for i in range(1, 11))))  # fmt: skip
        menu("&Tools", named("tool_paint", "tool_erase", "tool_pan", "tool_zoom", None, "brush_bigger",
                             "brush_smaller", None, "grow", "shrink", "fill_holes", "remove_islands", "smooth", None,
                             "interpolate", "interpolate_block", "propagate_back", "propagate_forward", None,
                             "statistics"))  # fmt: skip
        menu("&Study", named("approve_next", "approve", "reject", "amend", "resegment"))

    def _say(self, text: str, msecs: int = 0) -> None:
        sb = self.statusBar()
        if sb is not None:
            sb.showMessage(text, msecs)

    def _update_title(self) -> None:
        where = self.client.base_url if self.client else "offline"
        mod = " — not saved yet" if self.review.modified else ""
        who = f"{self.review.heading.one_line} — " if self.review.heading and self.review.current else ""
        self.setWindowTitle(window_title(f"Laurel review — {who}{where}{mod}"))
        has = self.review.current is not None
        self.act_save_local.setEnabled(has)
        self.act_review.setEnabled(has)
        self.act_save_node.setEnabled(has and self.review.study is not None)
        self.act_refresh.setEnabled(self.client is not None)
        self.act_connect.setEnabled(self.client is not None)

    def _busy_changed(self, _busy: bool) -> None:
        busy = self.runner.busy or self.writer.busy
        self.progress.setVisible(busy)
        if busy and self.progress.maximum() != 0:
            self.progress.setRange(0, 0)
            self.progress.setFormat("working…")
        self.worklist.refresh_button.setEnabled(not self.runner.busy)

    def _progress(self, text: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(text)
        self._say(text)

    def show_error(self, title: str, error: BaseException | str) -> QMessageBox:
        """A non-blocking error dialog (kept as ``last_error``); its text is plain text."""
        text = str(error) if isinstance(error, BaseException) else error
        if isinstance(error, BaseException) and not isinstance(error, NodeError | ValueError | OSError):
            where = "".join(traceback.format_tb(error.__traceback__))
            log.error("unexpected %s\n%s", type(error).__name__, where)  # no message: it may hold patient data
            text = f"Unexpected error ({type(error).__name__}): {error}"
        box = message_box(self, QMessageBox.Critical, title, text[:1].upper() + text[1:], QMessageBox.Ok)
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
        client, epoch = self.client, self.epoch
        self.worklist.status.setText("connecting…")
        self.runner.start(
            lambda _p: client.check(),
            on_done=lambda _h: self._connected() if epoch == self.epoch else None,
            on_failed=lambda e: self._connection_failed(e) if epoch == self.epoch else None,
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
            client = NodeClient(url, token.strip() or None)
        except ValueError as exc:
            self.show_error("Cannot connect", exc)
            return
        if self.client is not None and client.base_url == self.client.base_url:
            client.close()  # the same node with another token: the open study stays open
            self.client.set_token(token.strip() or None)
            self.start()
            return
        self.switch_node(client)

    def use_client(self, client: NodeClient) -> None:
        """Talk to ``client``'s node from now on (nothing of the old node's study stays open)."""
        old = self.client
        self.epoch += 1
        self.client = client
        self.worklist.clear("connecting…")
        self.node_label.setText(client.base_url)
        self._update_title()
        if old is not None and old is not client:
            old.close()
        self.start()

    # ---- worklist --------------------------------------------------------------------------------
    def refresh_worklist(self, state: str | None = None) -> None:
        """Reload the worklist in the background."""
        if self.client is None or self._refreshing:
            return
        client, epoch = self.client, self.epoch
        self._refreshing = True

        def done(studies: list[StudySummary]) -> None:
            self._refreshing = False
            if epoch == self.epoch:
                self.worklist.set_studies(studies)

        def failed(exc: BaseException) -> None:
            self._refreshing = False
            if epoch != self.epoch:
                return
            self.worklist.set_error(str(exc))
            if isinstance(exc, AuthError):
                self.ask_token(str(exc))

        self.runner.start(lambda _p: client.studies(state), on_done=done, on_failed=failed, name="studies")

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
        self.study_client = None
        self.local_path = labels
        series = [SeriesData(summary, EditSession(vol.image, lab, vol.spacing), segments)]
        self.review.load(None, series, Heading.local(volume.name), editable=True)
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
            if self.review.study is not None and self.study_client is not None:
                self.save_before(lambda: self._quit_confirmed(), "closing")  # corrections go to the node first
                return
            box = message_box(self, QMessageBox.Warning, "Quit?",
                              "The open files have labels that were not saved. Quit and lose them?",
                              QMessageBox.Discard | QMessageBox.Cancel)  # fmt: skip
            box.setDefaultButton(QMessageBox.Cancel)
            box.finished.connect(lambda r: self._quit_confirmed() if r == QMessageBox.Discard else None)
            self.dialog = box
            box.open()
            return
        self._closing = True
        self.autosave_timer.stop()
        self.worklist.timer.stop()
        if self.settings is not None:
            preferences.store(self, self.settings)
        self.writer.wait(30000)
        self.runner.wait(10000)
        unsaved = [s for s in self.review.series if s.session.modified]
        if unsaved and self.review.study is not None:  # e.g. the node was down and you chose to quit anyway
            self.keep_locally(unsaved)
        for c in {self.client, self.study_client} - {None}:
            assert c is not None
            c.close()
        event.accept()

    def _quit_confirmed(self) -> None:
        self._close_confirmed = True
        self.close()
