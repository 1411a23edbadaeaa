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
from review_station.dialogs import ApproveDialog, RejectDialog
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
