"""Approve, approve & next, reject: always after a confirmation, naming the study on screen by its UID.

The labels of every series go to the node exactly as they are on screen, then the decision; a failure leaves
the corrections where they are, with the reason in a dialog. "Approve & next" then opens the oldest other study
pending review that nobody has in progress.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from review_station.client import AuthError
from review_station.dialogs import AmendDialog, ApproveDialog, RejectDialog
from review_station.domain import StudySummary
from review_station.text import Heading
from review_station.window_parts import WindowParts
from review_station.workers import Progress

log = logging.getLogger(__name__)


def next_study(studies: list[StudySummary], after: int) -> StudySummary | None:
    """The oldest study pending review other than ``after`` that nobody has in progress."""
    waiting = [s for s in studies if s.id != after and s.state == "PENDING_REVIEW" and not s.in_progress_by]
    return min(waiting, key=lambda s: (s.received_at or "", s.id), default=None)


class Decisions(WindowParts):
    """Mixin of :class:`~review_station.main_window.MainWindow`: the decisions on the open study."""

    def _decidable(self) -> StudySummary | None:
        study = self.review.study
        if self.client is None or self.study_client is not self.client or study is None:
            return None  # a study of another node cannot be decided here
        if study.state != "PENDING_REVIEW" or not self.review.editable:
            return None
        return study

    def _heading(self, study: StudySummary) -> Heading:
        return self.review.heading or Heading.of(study)

    def ask_approve(self, then_next: bool = False) -> None:
        """Open the approval confirmation (nothing is sent until its Approve button is pressed)."""
        if (study := self._decidable()) is None:
            return
        lines = []
        for s in self.review.series:
            changed = s.session.modified or (s.draft is not None and not np.array_equal(s.draft, s.session.labels))
            lines.append(
                f"{s.summary.title} — {'corrected' if changed or s.summary.has_corrected else 'draft unchanged'}"
            )
        dlg = ApproveDialog(self._heading(study), lines, self, then_next=then_next)  # type: ignore[arg-type]
        dlg.accepted.connect(lambda: self.approve(dlg.comment_text(), then_next=then_next))
        self.dialog = dlg
        dlg.open()

    def approve(self, comment: str | None, *, then_next: bool = False) -> None:
        """Upload the labels of every series, then approve (in the background; edits kept on failure)."""
        if (study := self._decidable()) is None:
            return
        assert self.client is not None
        client = self.client
        uploads = [(s.summary.id, s.summary.SeriesInstanceUID, s.session.labels.copy()) for s in self.review.series]
        self.review.set_read_only(True)

        def work(progress: Progress) -> dict[str, Any]:
            n = len(uploads)
            for i, (series_id, uid, labels) in enumerate(uploads):
                progress(f"uploading labels {i + 1}/{n}", i, n + 1)
                client.put_labels(series_id, labels, uid)
            progress("approving", n, n + 1)
            return client.approve(study.id, study.StudyInstanceUID, comment)

        self.writer.start(
            work,
            on_done=lambda r: self._decided(study, r, "APPROVED", [u[2] for u in uploads], then_next),
            on_failed=lambda e: self._decision_failed("Approval failed", e),
            on_progress=self._progress,
            name="approve",
        )

    def ask_reject(self) -> None:
        """Open the rejection dialog (a reason is required)."""
        if (study := self._decidable()) is None:
            return
        dlg = RejectDialog(self._heading(study), self)  # type: ignore[arg-type]
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
            return client.reject(study.id, study.StudyInstanceUID, reason)

        self.writer.start(
            work,
            on_done=lambda r: self._decided(study, r, "REJECTED", [], False),
            on_failed=lambda e: self._decision_failed("Rejection failed", e),
            on_progress=self._progress,
            name="reject",
        )

    def ask_amend(self) -> None:
        """Reopen the approved study on screen for correction (asks for a reason)."""
        study = self.review.study
        if self.client is None or self.study_client is not self.client or study is None:
            return
        if study.state not in ("APPROVED", "EXPORTED"):
            return
        dlg = AmendDialog(self._heading(study), self)  # type: ignore[arg-type]
        dlg.accepted.connect(lambda: self.amend_study(dlg.reason_text()))
        self.dialog = dlg
        dlg.open()

    def amend_study(self, reason: str) -> None:
        """Send the amendment, then open the study again (editable, starting from the approved labels)."""
        study = self.review.study
        if self.client is None or study is None or not reason.strip():
            return
        client = self.client

        def work(progress: Progress) -> dict[str, Any]:
            progress("reopening", 0, 0)
            return client.amend(study.id, study.StudyInstanceUID, reason)

        def reopened(_result: dict[str, Any]) -> None:
            self._say(f"study {study.id} reopened for amendment", 15000)
            self.worklist.request_refresh()
            self._load_study(study.id)

        self.writer.start(
            work,
            on_done=reopened,
            on_failed=lambda e: self._amend_failed(e),
            on_progress=self._progress,
            name="amend",
        )

    def ask_resegment(self) -> None:
        """The series on screen changed since its draft: ask the node for a new one, then open the study again."""
        study, cur = self._decidable(), self.review.current
        if study is None or cur is None or self.client is None:
            return
        unsaved = cur.session.labels.copy() if cur.session.modified else None
        if self.offer_new_draft(study, cur.summary.id, cur.summary.SeriesInstanceUID, unsaved):
            cur.session.mark_saved(cur.session.labels)  # set aside on the node, not lost

    def offer_new_draft(self, study: StudySummary, series_id: int, uid: str, unsaved: np.ndarray | None = None) -> bool:
        """Ask whether to make a new draft of a series that received images after its draft; True if asked for."""
        from PyQt5.QtWidgets import QMessageBox

        if self.client is None:
            return False
        answer = QMessageBox.question(
            self,  # type: ignore[arg-type]
            "New draft",
            "Images of this series arrived after its draft was corrected. Ask the node for a new draft over every "
            "image?\nYour corrections of the old draft are set aside (kept on the node, in the audit log).",
            QMessageBox.Yes | QMessageBox.Cancel,
            QMessageBox.Cancel,
        )
        if answer != QMessageBox.Yes:
            self.show_worklist()
            return False
        client = self.client
        self.review.set_read_only(True)  # no autosave of the old draft's shape while the new one is made

        def work(progress: Progress) -> dict[str, Any]:
            import time

            if unsaved is not None:  # kept on the node with the other corrections that are set aside
                progress("saving your corrections", 0, 0)
                client.put_labels(series_id, unsaved, uid)
            progress("asking for a new draft", 0, 0)
            client.resegment(series_id, uid)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # the node makes the draft in the background
                fresh = next(s for s in client.study(study.id).series if s.id == series_id)
                if fresh.state == "SEGMENTED" and not fresh.changed_since_draft and not fresh.has_corrected:
                    return {"state": "ready"}
                time.sleep(1.0)
            raise TimeoutError("the node did not make the new draft within 5 minutes; open the study again later")

        def ready(_result: dict[str, Any]) -> None:
            self.recovery.discard(uid)
            self._load_study(study.id)

        self.writer.start(
            work, on_done=ready, on_failed=self._resegment_failed, on_progress=self._progress, name="resegment"
        )
        return True

    def _resegment_failed(self, exc: BaseException) -> None:
        self.review.set_read_only(False)
        self.show_error("New draft failed", exc)

    def _amend_failed(self, exc: BaseException) -> None:
        self.show_error("Amendment failed", exc)

    def _decided(
        self, study: StudySummary, result: dict[str, Any], default_state: str, sent: list[np.ndarray], then_next: bool
    ) -> None:
        for s, labels in zip(self.review.series, sent, strict=False):
            s.session.mark_saved(labels)  # what the node holds now
            self.recovery.discard(s.summary.SeriesInstanceUID)
        state = str(result.get("state") or default_state)
        self.review.set_state(replace(study, state=state))
        extra = ""
        scores = [d.get("overall") for d in (result.get("dice") or {}).values() if isinstance(d, dict)]
        scores = [float(v) for v in scores if isinstance(v, int | float)]
        if scores:
            extra = " — agreement with the draft (Dice) " + ", ".join(f"{v:.3f}" for v in scores)
        self._say(f"study {study.id}: {state}{extra}", 15000)
        self._update_title()
        self.worklist.request_refresh()
        if then_next and state == "APPROVED":
            self.open_next(study.id)
        else:
            self.show_worklist()

    def open_next(self, after: int) -> None:
        """Open the next study pending review (see :func:`next_study`), or show the worklist if none."""
        if self.client is None:
            return
        client, epoch = self.client, self.epoch

        def chosen(studies: list[StudySummary]) -> None:
            if epoch != self.epoch:
                return
            nxt = next_study(studies, after)
            if nxt is None:
                self.show_worklist()
                busy = sum(1 for s in studies if s.id != after and s.in_progress_by)
                self._say(
                    "no other study is waiting for review" + (f" ({busy} in progress by someone else)" if busy else ""),
                    15000,
                )
                return
            self._load_study(nxt.id)

        def failed(exc: BaseException) -> None:
            if epoch == self.epoch:
                self.show_worklist()
                self.show_error("Cannot find the next study", exc)

        self._say("approved; opening the next study…")
        self.runner.start(lambda _p: client.studies("PENDING_REVIEW"), on_done=chosen, on_failed=failed, name="next")

    def _decision_failed(self, title: str, exc: BaseException) -> None:
        self.review.set_read_only(False)
        self.show_error(title, f"{exc}\n\nYour corrections are kept; nothing was approved.")
        if isinstance(exc, AuthError):
            self.ask_token(str(exc))
