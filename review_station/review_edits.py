"""The editing commands of the review page (mask tools, across slices, undo/redo), on the series on screen.

Each command works on the active muscle through the series' :class:`~review_station.editing.EditSession`, so
it is one undoable step; a command that cannot run says why in the status bar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QAction, QApplication

from review_station.editing import EditError, EditSession
from review_station.history import Edit

if TYPE_CHECKING:
    from review_station.panel import ToolPanel
    from review_station.review_page import SeriesData
    from review_station.viewer import SliceCanvas

log = logging.getLogger(__name__)

SMOOTH_SIGMA = 1.5  # pixels


class EditCommands:
    """Mixin of :class:`~review_station.review_page.ReviewPage`: the commands that change the labels."""

    if TYPE_CHECKING:
        canvas: SliceCanvas
        panel: ToolPanel
        acts: dict[str, QAction]
        editable: bool
        message: Any
        editsChanged: Any

        @property
        def current(self) -> SeriesData | None: ...

        def _update_actions(self) -> None: ...

        def _update_dice(self) -> None: ...

        def _recompose_reformats(self) -> None: ...

    def wire_edits(self) -> None:
        """Connect the editing actions."""
        a = self.acts
        a["grow"].triggered.connect(self.grow)
        a["shrink"].triggered.connect(self.shrink)
        a["fill_holes"].triggered.connect(self.fill_holes)
        a["remove_islands"].triggered.connect(self.remove_islands)
        a["smooth"].triggered.connect(self.smooth)
        a["interpolate"].triggered.connect(lambda: self.interpolate(block=False))
        a["interpolate_block"].triggered.connect(lambda: self.interpolate(block=True))
        a["propagate_back"].triggered.connect(lambda: self.propagate(-1))
        a["propagate_forward"].triggered.connect(lambda: self.propagate(1))
        a["undo"].triggered.connect(self.undo)
        a["redo"].triggered.connect(self.redo)

    def after_edit(self, edit: Edit | None = None) -> None:
        """Redraw and tell the window after labels changed."""
        if edit is not None:
            self.canvas.refresh_slices(edit.slices)
        self._update_actions()
        if self.canvas.mark_differences:
            self._update_dice()
        self._recompose_reformats()
        self.editsChanged.emit()

    def _run(self, what: str, fn: Callable[[EditSession, int, int], Edit | None]) -> Edit | None:
        cur = self.current
        if cur is None or not self.editable or self.canvas.showing_reference:
            return None
        label = self.canvas.overlay.active
        if label == 0:
            self.message.emit("choose a muscle first")
            return None
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            edit = fn(cur.session, self.canvas.z, label)
        except EditError as exc:
            self.message.emit(f"{what}: {exc}")
            return None
        finally:
            QApplication.restoreOverrideCursor()
        self.message.emit(f"{what}: nothing changed" if edit is None else edit.description)
        self.after_edit(edit)
        return edit

    def _scope(self, z: int) -> int | None:
        return None if self.panel.all_slices_check.isChecked() else z

    def grow(self) -> None:
        """Grow the active muscle (current slice, or all slices)."""
        self._run("grow", lambda s, z, lab: s.grow(self._scope(z), lab))

    def shrink(self) -> None:
        """Shrink the active muscle."""
        self._run("shrink", lambda s, z, lab: s.shrink(self._scope(z), lab))

    def fill_holes(self) -> None:
        """Fill holes of the active muscle."""
        self._run("fill holes", lambda s, z, lab: s.fill_holes(self._scope(z), lab))

    def smooth(self) -> None:
        """Smooth the outline of the active muscle (current slice, or all slices)."""
        self._run("smooth", lambda s, z, lab: s.smooth(self._scope(z), lab, SMOOTH_SIGMA))

    def remove_islands(self) -> None:
        """Remove islands smaller than the chosen size (active muscle, or every muscle)."""
        size = self.panel.island_spin.value()
        every = self.panel.islands_all_check.isChecked()
        self._run(
            "remove islands",
            lambda s, z, lab: s.remove_small_islands(self._scope(z), None if every else lab, size),
        )

    def interpolate(self, block: bool) -> None:
        """Interpolate the active muscle on this slice (or the whole gap around it)."""
        self._run("interpolate", lambda s, z, lab: s.interpolate(lab, z, block=block))

    def propagate(self, direction: int) -> None:
        """Carry this slice's labels to the next (+1) or previous (-1) slice and go there."""
        every = self.panel.propagate_all_check.isChecked()
        edit = self._run("propagate", lambda s, z, lab: s.propagate(z, z + direction, None if every else lab))
        if edit is not None:
            self.canvas.step_slice(direction)

    def undo(self) -> None:
        """Undo the last edit of the current series and show the slice it touched."""
        self._history_step(undo=True)

    def redo(self) -> None:
        """Redo the last undone edit of the current series."""
        self._history_step(undo=False)

    def _history_step(self, undo: bool) -> None:
        cur = self.current
        if cur is None or not self.editable or self.canvas.showing_reference:
            return
        edit = cur.session.undo() if undo else cur.session.redo()
        if edit is None:
            return
        if self.canvas.z not in edit.slices:
            self.canvas.set_slice(edit.slices[0])
        self.message.emit(f"{'undid' if undo else 'redid'} {edit.description}")
        self.after_edit(edit)
