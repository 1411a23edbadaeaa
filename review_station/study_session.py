"""The open study and the safety of its corrections: open, autosave, save before leaving, switch node, rescue.

Corrections reach the node (``PUT labels`` with the series' UID; the study stays pending) every
:data:`~review_station.main_window.AUTOSAVE_MS`, before another study opens, before the station connects to
another node and before the window closes. Opening always reads the study again from the node
(``version=current``: the radiologist resumes where they left). Corrections that cannot reach the node, or that
are open when an unexpected error happens, are kept on this computer (:mod:`review_station.recovery`) and
offered again the next time their series opens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
from PyQt5.QtWidgets import QMessageBox

from review_station.client import AuthError, Conflict, NodeClient, NodeUnreachable
from review_station.domain import Segment, SeriesSummary, StudySummary, Volume
from review_station.editing import EditSession
from review_station.review_page import SeriesData
from review_station.text import Heading
from review_station.window_parts import WindowParts
from review_station.workers import Progress

log = logging.getLogger(__name__)

LoadedSeries = tuple[SeriesSummary, Volume, np.ndarray, np.ndarray | None, list[Segment]]
Upload = tuple[SeriesData, np.ndarray]


def _message_box(parent: Any, icon: QMessageBox.Icon, title: str, text: str, buttons: Any) -> QMessageBox:
    from review_station.main_window import message_box

    return message_box(parent, icon, title, text, buttons)


class StudySession(WindowParts):
    """Mixin of :class:`~review_station.main_window.MainWindow`: the open study and its corrections."""

    _autosave_refused: int | None = None  # a study whose corrections the node refused: no autosave for it

    # ---- open ------------------------------------------------------------------------------------
    def open_study(self, study_id: int) -> None:
        """Load a study from the node and show it; corrections of the open study are saved first."""
        if self.client is None:
            return
        if self.review.modified:
            if self.review.study is not None and self.study_client is not None:
                self.save_before(lambda: self._load_study(study_id), "opening another study")
                return
            box = _message_box(self, QMessageBox.Warning, "Discard edits?",
                               "The open files have labels that were not saved. Discard them and open the study?",
                               QMessageBox.Discard | QMessageBox.Cancel)  # fmt: skip
            box.setDefaultButton(QMessageBox.Cancel)
            box.finished.connect(lambda r: self._load_study(study_id) if r == QMessageBox.Discard else None)
            self.dialog = box
            box.open()
            return
        self._load_study(study_id)

    def _load_study(self, study_id: int) -> None:
        assert self.client is not None
        client, epoch = self.client, self.epoch

        def work(progress: Progress) -> tuple[StudySummary, list[LoadedSeries]]:
            progress("reading the study", 0, 0)
            study = client.study(study_id)
            todo = [s for s in study.series if s.has_draft or s.has_corrected]
            out = []
            n = 4 * len(todo)
            for i, s in enumerate(todo):
                progress(f"series {i + 1}/{len(todo)}: image", 4 * i, n)
                vol = client.volume(s.id)
                progress(f"series {i + 1}/{len(todo)}: labels", 4 * i + 1, n)
                labels = client.labels(s.id, "current")
                progress(f"series {i + 1}/{len(todo)}: draft", 4 * i + 2, n)
                draft = client.labels(s.id, "draft") if s.has_draft else None
                progress(f"series {i + 1}/{len(todo)}: muscles", 4 * i + 3, n)
                out.append((s, vol, labels, draft, client.segments(s.id)))
            return study, out

        self._say(f"opening study {study_id}…")
        self.runner.start(
            work,
            on_done=lambda r: self._study_loaded(r, client) if epoch == self.epoch else None,
            on_failed=lambda e: self._open_failed(e) if epoch == self.epoch else None,
            on_progress=self._progress,
            name="open",
        )

    def _open_failed(self, exc: BaseException) -> None:
        self.show_error("Cannot open the study", exc)
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))

    def _study_loaded(self, result: tuple[StudySummary, list[LoadedSeries]], client: NodeClient) -> None:
        study, loaded = result
        series = []
        for summary, vol, labels, draft, segments in loaded:
            if labels.shape != vol.image.shape and summary.changed_since_draft and study.state == "PENDING_REVIEW":
                # images arrived after the draft was corrected: the only way forward is a new draft
                self.offer_new_draft(study, summary.id, summary.SeriesInstanceUID)
                return
            if labels.shape != vol.image.shape or (draft is not None and draft.shape != labels.shape):
                self.show_error(
                    "Cannot open the study", f"series {summary.id}: labels and image {vol.image.shape} differ in shape"
                )
                return
            session = EditSession(vol.image, labels, vol.spacing)
            series.append(SeriesData(summary, session, segments, draft=draft))
        if not series:
            self.show_error("Nothing to review", "this study has no segmentation draft (yet)")
            return
        self.open_study_id = study.id
        self.study_client = client
        self.local_path = None
        self._autosave_refused = None
        editable = study.state == "PENDING_REVIEW"
        self.review.load(study, series, Heading.of(study), editable)
        self._say(f"opened study {study.id}" + ("" if editable else f" (read only: {study.state})"), 5000)
        self.show_review()
        self._update_title()
        if editable:
            self.offer_kept(series)

    def close_study(self) -> None:
        """Nothing open any more (its unsaved corrections are dropped: save first)."""
        self.review.clear()
        self.open_study_id = None
        self.study_client = None
        self.local_path = None
        self.show_worklist()
        self._update_title()

    # ---- saving to the node ----------------------------------------------------------------------
    def autosave(self) -> None:
        """Timer: save the corrections of the open study if there are any (and nothing is being sent)."""
        if self._closing or self.writer.busy or not self.review.modified or not self.review.editable:
            return
        if self.review.study is None or self.study_client is None or self.open_study_id == self._autosave_refused:
            return
        self.save_to_node("autosave")

    def save_to_node(
        self,
        reason: str,
        *,
        then: Callable[[], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        """PUT the corrected series of the open study (in the background), then ``then()``.

        The study stays PENDING_REVIEW. On failure the corrections stay on screen and are also kept on this
        computer; ``failed(exc)`` decides what happens next (default: say why).
        """
        study, client = self.review.study, self.study_client
        todo: list[Upload] = [(s, s.session.labels.copy()) for s in self.review.series if s.session.modified]
        if study is None or client is None or not self.review.editable or not todo:
            if then is not None:
                then()
            return
        self._say(f"saving corrections to the node ({reason})…")

        def work(progress: Progress) -> None:
            for i, (s, labels) in enumerate(todo):
                progress(f"saving corrections {i + 1}/{len(todo)}", i, len(todo))
                client.put_labels(s.summary.id, labels, s.summary.SeriesInstanceUID)

        self.writer.start(
            work,
            on_done=lambda _r: self._saved(todo, then),
            on_failed=lambda e: self._save_failed(e, todo, reason, failed),
            on_progress=self._progress,
            name="save",
        )

    def _saved(self, todo: list[Upload], then: Callable[[], None] | None) -> None:
        for s, sent in todo:
            s.session.mark_saved(sent)  # what the node holds now; later strokes stay "modified"
            self.recovery.discard(s.summary.SeriesInstanceUID)
        self._say(f"corrections saved to the node at {datetime.now():%H:%M:%S}", 8000)
        self._update_title()
        if then is not None:
            then()

    def _save_failed(
        self, exc: BaseException, todo: list[Upload], reason: str, failed: Callable[[BaseException], None] | None
    ) -> None:
        folder = self.keep_locally([s for s, _ in todo])
        kept = f" They are also kept on this computer ({folder})." if folder else ""
        log.warning("saving corrections (%s) failed: %s", reason, type(exc).__name__)
        if isinstance(exc, Conflict):
            self._autosave_refused = self.open_study_id
        if failed is not None:
            failed(exc)
        elif isinstance(exc, NodeUnreachable) and reason == "autosave":
            self._say(f"autosave failed (the node cannot be reached); your corrections stay here.{kept}", 15000)
        else:
            self.show_error("The corrections were not saved", f"{exc}\n\nYour corrections are kept on screen.{kept}")
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))

    def save_before(self, then: Callable[[], None], reason: str) -> None:
        """Save the corrections, then ``then()``; if they cannot be saved, ask whether to go on anyway."""

        def ask(exc: BaseException) -> None:
            box = _message_box(
                self, QMessageBox.Warning, "Corrections not saved",
                f"The corrections could not be saved to the node before {reason}:\n{exc}\n\n"
                f"They are kept on this computer and offered again when the series is opened. "
                f"Continue ({reason}) anyway?",
                QMessageBox.Ignore | QMessageBox.Cancel,
            )  # fmt: skip
            box.setDefaultButton(QMessageBox.Cancel)
            box.finished.connect(lambda r: then() if r == QMessageBox.Ignore else None)
            self.dialog = box
            self.last_error = box
            box.open()

        self.save_to_node(reason, then=then, failed=ask)

    # ---- another node ----------------------------------------------------------------------------
    def switch_node(self, client: NodeClient) -> None:
        """Connect to ``client``'s node: the open study is closed, after offering to save its corrections."""
        if self.review.study is None or self.study_client is None:
            self._switch(client)
            return
        if not (self.review.modified and self.review.editable):
            self._switch(client)
            return
        old = self.study_client.base_url
        box = _message_box(
            self, QMessageBox.Question, "Save the corrections?",
            f"The open study has corrections not yet saved to the node it came from ({old}).\n\n"
            f"Save them there before connecting to {client.base_url}? The study is closed either way.",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel,
        )  # fmt: skip
        box.setDefaultButton(QMessageBox.Save)

        def chosen(r: int) -> None:
            if r == QMessageBox.Save:
                self.save_before(lambda: self._switch(client), "connecting to another node")
            elif r == QMessageBox.Discard:
                self._switch(client)
            else:
                client.close()

        box.finished.connect(chosen)
        self.dialog = box
        box.open()

    def _switch(self, client: NodeClient) -> None:
        self.close_study()
        self.use_client(client)

    # ---- kept on this computer -------------------------------------------------------------------
    def keep_locally(self, series: list[SeriesData]) -> str | None:
        """Write the labels of ``series`` to the recovery folder; returns the folder (None if nothing kept)."""
        node = self.study_client.base_url if self.study_client else None
        kept = None
        for s in series:
            uid = s.summary.SeriesInstanceUID or f"local-{s.summary.SeriesDescription}"
            try:
                self.recovery.save(
                    uid, s.session.labels, study_id=self.open_study_id, series_id=s.summary.id, node=node
                )
                kept = str(self.recovery.folder)
            except OSError as exc:
                log.error("cannot keep corrections on this computer: %s", type(exc).__name__)
        return kept

    def rescue_edits(self, error_name: str) -> None:
        """After an unexpected error: keep the open corrections on disk and say so (the app goes on)."""
        modified = [s for s in self.review.series if s.session.modified]
        folder = self.keep_locally(modified) if modified else None
        text = f"An unexpected error happened ({error_name}); the details are in the log.\n\n"
        if folder:
            text += (
                f"Your corrections of {len(modified)} series were kept on this computer ({folder}) and will be "
                "offered again when the series is opened. They are still on screen too."
            )
        else:
            text += "No unsaved correction was open."
        self.show_error("Unexpected error", text)

    def offer_kept(self, series: list[SeriesData]) -> None:
        """Offer the corrections kept on this computer for the series just opened."""
        found = []
        for s in series:
            kept = self.recovery.load(s.summary.SeriesInstanceUID) if s.summary.SeriesInstanceUID else None
            if kept is None or kept.labels.shape != s.session.labels.shape:
                continue
            if np.array_equal(kept.labels, s.session.labels):
                self.recovery.discard(kept.uid)  # the node has them already
                continue
            found.append((s, kept))
        if not found:
            return
        when = max(k.saved_at for _, k in found)
        box = _message_box(
            self, QMessageBox.Question, "Restore kept corrections?",
            f"Corrections of {len(found)} series of this study were kept on this computer (the latest at {when}) "
            "after an error or a save that failed. Restore them in place of the labels from the node? "
            "(Undo takes them back.)",
            QMessageBox.Yes | QMessageBox.No,
        )  # fmt: skip
        restore, discard = box.button(QMessageBox.Yes), box.button(QMessageBox.No)
        if restore is not None and discard is not None:
            restore.setText("Restore")
            discard.setText("Discard them")
        box.setDefaultButton(QMessageBox.Yes)

        def chosen(r: int) -> None:
            for s, kept in found:
                if r == QMessageBox.Yes:
                    edit = s.session.replace_labels("restore kept corrections", kept.labels)
                    self.review.after_edit(edit)
                self.recovery.discard(kept.uid)
            self._update_title()

        box.finished.connect(chosen)
        self.dialog = box
        box.open()
