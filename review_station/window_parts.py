"""What the main window's mixins (:mod:`study_session`, :mod:`decisions`) use of the window; typing only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from PyQt5.QtWidgets import QMessageBox

    from review_station.client import NodeClient
    from review_station.domain import StudySummary
    from review_station.recovery import RecoveryStore
    from review_station.review_page import ReviewPage
    from review_station.workers import TaskRunner
    from review_station.worklist import WorklistWidget


class WindowParts:
    """Attributes and methods of :class:`~review_station.main_window.MainWindow` that the mixins call."""

    if TYPE_CHECKING:
        client: NodeClient | None
        study_client: NodeClient | None
        recovery: RecoveryStore
        runner: TaskRunner
        writer: TaskRunner
        open_study_id: int | None
        local_path: Path | None
        last_error: QMessageBox | None
        dialog: Any
        epoch: int
        _closing: bool
        review: ReviewPage
        worklist: WorklistWidget

        def _say(self, text: str, msecs: int = 0) -> None: ...

        def _progress(self, text: str, done: int, total: int) -> None: ...

        def _update_title(self) -> None: ...

        def show_error(self, title: str, error: BaseException | str) -> QMessageBox: ...

        def ask_token(self, message: str) -> None: ...

        def show_review(self) -> None: ...

        def show_worklist(self) -> None: ...

        def use_client(self, client: NodeClient) -> None: ...

        def open_study(self, study_id: int) -> None: ...

        def _load_study(self, study_id: int) -> None: ...

        def offer_new_draft(
            self, study: StudySummary, series_id: int, uid: str, unsaved: np.ndarray | None = None
        ) -> bool: ...
