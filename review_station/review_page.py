"""The review page: canvas + toolbox for the series of one open study, and every editing action.

Actions (with Dafne's shortcuts where Dafne has one) live here and are added to the main window so that their
shortcuts work anywhere on the page; buttons in the toolbox show the same actions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import QAction, QActionGroup, QApplication, QHBoxLayout, QInputDialog, QWidget

from review_station.domain import Segment, SeriesSummary, StudySummary
from review_station.editing import EditError, EditSession
from review_station.history import Edit
from review_station.panel import ToolPanel
from review_station.viewer import SliceCanvas

log = logging.getLogger(__name__)


@dataclass
class SeriesData:
    """A series of the open study with its edit session and segment catalogue."""

    summary: SeriesSummary
    session: EditSession
    segments: list[Segment]
    hidden: set[int] = field(default_factory=set)
    z: int | None = None


# name: (text, shortcuts, tip) — Dafne: arrows/wheel slices, Shift paint, Ctrl erase, n/b propagate,
# -/y/z smaller, +/x bigger, Ctrl+Z undo, Ctrl+Y redo, Ctrl+G go to image.
ACTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "tool_paint": ("Paint", ("P",), "paint the active muscle (or hold Shift)"),
    "tool_erase": ("Erase", ("E",), "erase the active muscle (or hold Ctrl)"),
    "tool_pan": ("Pan", (), "drag to move the image (or middle-drag)"),
    "tool_zoom": ("Zoom", (), "drag up/down to zoom (or Alt+wheel)"),
    "brush_bigger": ("Bigger brush", ("+", "=", "X"), "increase the brush radius"),
    "brush_smaller": ("Smaller brush", ("-", "Y", "Z"), "decrease the brush radius"),
    "grow": ("Grow", ("G",), "grow the active muscle by one pixel into unlabelled pixels"),
    "shrink": ("Shrink", ("Shift+G",), "shrink the active muscle by one pixel"),
    "fill_holes": ("Fill holes", (), "fill the holes of the active muscle"),
    "remove_islands": ("Remove islands", (), "clear small separate pieces"),
    "interpolate": ("Interpolate", ("I",), "redraw this slice from the labelled slices above and below"),
    "interpolate_block": (
        "Interpolate block", ("Shift+I",), "fill every slice of the gap between two labelled slices",
    ),
    "propagate_back": ("◀ Propagate (B)", ("B",), "carry this slice's labels to the previous slice"),
    "propagate_forward": ("Propagate (N) ▶", ("N",), "carry this slice's labels to the next slice"),
    "undo": ("Undo", ("Ctrl+Z",), "undo the last edit"),
    "redo": ("Redo", ("Ctrl+Y", "Ctrl+Shift+Z"), "redo the last undone edit"),
    "overlay": ("Show muscles", ("O",), "show or hide every muscle"),
    "goto": ("Go to slice…", ("Ctrl+G",), "jump to a slice number"),
    "fit": ("Fit to window", ("F",), "zoom so the whole slice fits"),
    "reset_window": ("Reset window/level", ("W",), "back to the automatic window"),
    "statistics": ("Statistics…", (), "volume and intensity per muscle, CSV export"),
    "approve": ("Approve…", (), "approve the corrected labels (asks for confirmation)"),
    "reject": ("Reject…", (), "reject the study (asks for a reason)"),
}  # fmt: skip


class ReviewPage(QWidget):
    """Canvas and toolbox for the series of the open study."""

    editsChanged = pyqtSignal()
    message = pyqtSignal(str)
    approveRequested = pyqtSignal()
    rejectRequested = pyqtSignal()
    statisticsRequested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.study: StudySummary | None = None
        self.series: list[SeriesData] = []
        self.index = -1
        self.editable = False
        self.acts = self._make_actions()
        self.canvas = SliceCanvas()
        self.panel = ToolPanel(self.acts)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(self.panel)
        self.setFocusProxy(self.canvas)
        self._wire()
        self._update_actions()

    # ---- actions ---------------------------------------------------------------------------------
    def _make_actions(self) -> dict[str, QAction]:
        acts: dict[str, QAction] = {}
        for name, (text, keys, tip) in ACTIONS.items():
            a = QAction(text, self)
            if keys:
                a.setShortcuts([QKeySequence(k) for k in keys])
                a.setToolTip(f"{tip} ({', '.join(keys)})")
            else:
                a.setToolTip(tip)
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            acts[name] = a
        group = QActionGroup(self)
        for name in ("tool_paint", "tool_erase", "tool_pan", "tool_zoom"):
            acts[name].setCheckable(True)
            group.addAction(acts[name])
        acts["tool_paint"].setChecked(True)
        acts["overlay"].setCheckable(True)
        acts["overlay"].setChecked(True)
        return acts

    def _wire(self) -> None:
        a, c, p = self.acts, self.canvas, self.panel
        for name in ("paint", "erase", "pan", "zoom"):
            a[f"tool_{name}"].triggered.connect(lambda _=False, n=name: c.set_tool(n))
        a["brush_bigger"].triggered.connect(lambda: c.set_radius(c.radius + 1))
        a["brush_smaller"].triggered.connect(lambda: c.set_radius(c.radius - 1))
        a["grow"].triggered.connect(self.grow)
        a["shrink"].triggered.connect(self.shrink)
        a["fill_holes"].triggered.connect(self.fill_holes)
        a["remove_islands"].triggered.connect(self.remove_islands)
        a["interpolate"].triggered.connect(lambda: self.interpolate(block=False))
        a["interpolate_block"].triggered.connect(lambda: self.interpolate(block=True))
        a["propagate_back"].triggered.connect(lambda: self.propagate(-1))
        a["propagate_forward"].triggered.connect(lambda: self.propagate(1))
        a["undo"].triggered.connect(self.undo)
        a["redo"].triggered.connect(self.redo)
        a["overlay"].toggled.connect(self._overlay_toggled)
        a["goto"].triggered.connect(self.ask_slice)
        a["fit"].triggered.connect(c.fit)
        a["reset_window"].triggered.connect(c.reset_window)
        a["statistics"].triggered.connect(self.statisticsRequested)
        a["approve"].triggered.connect(self.approveRequested)
        a["reject"].triggered.connect(self.rejectRequested)
        c.brushChanged.connect(p.radius_spin.setValue)
        c.labelsEdited.connect(lambda _e: self._edited())
        c.sliceChanged.connect(lambda _z: self._update_actions())
        p.radius_spin.valueChanged.connect(c.set_radius)
        p.shape_combo.currentTextChanged.connect(lambda s: setattr(c, "shape", s))
        p.erase_all_check.toggled.connect(lambda v: setattr(c, "erase_all", v))
        p.protect_check.toggled.connect(lambda v: setattr(c, "protect_others", v))
        p.intensity_check.toggled.connect(lambda v: setattr(c, "intensity_aware", v))
        p.tolerance_spin.valueChanged.connect(lambda v: setattr(c, "intensity_tolerance", float(v)))
        p.overlay_check.toggled.connect(a["overlay"].setChecked)
        p.opacity_slider.valueChanged.connect(lambda v: c.set_opacity(v / 100.0))
        p.seriesChosen.connect(self.show_series)
        p.activeChosen.connect(self._active_chosen)
        p.visibilityChanged.connect(self._visibility_changed)
        for spin in (p.radius_spin, p.tolerance_spin, p.island_spin):
            spin.editingFinished.connect(lambda: self.canvas.setFocus())

    def set_actions_enabled(self, enabled: bool) -> None:
        """Enable the page's shortcuts only while the page is shown."""
        self._page_shown = enabled
        self._update_actions()

    def _update_actions(self) -> None:
        shown = getattr(self, "_page_shown", True)
        cur = self.current
        has = shown and cur is not None
        edit = has and self.editable
        for name in ACTIONS:
            self.acts[name].setEnabled(has)
        for name in ("grow", "shrink", "fill_holes", "remove_islands", "interpolate", "interpolate_block",
                     "propagate_back", "propagate_forward", "undo", "redo"):  # fmt: skip
            self.acts[name].setEnabled(edit)
        decidable = has and self.study is not None and self.study.state == "PENDING_REVIEW" and self.editable
        self.acts["approve"].setEnabled(decidable)
        self.acts["reject"].setEnabled(decidable)
        if cur is not None and edit:
            h = cur.session.history
            self.acts["undo"].setEnabled(h.can_undo)
            self.acts["redo"].setEnabled(h.can_redo)
            self.acts["undo"].setText(f"Undo {h.undo_text}" if h.undo_text else "Undo")
            self.acts["redo"].setText(f"Redo {h.redo_text}" if h.redo_text else "Redo")
            self.acts["propagate_back"].setEnabled(self.canvas.z > 0)
            self.acts["propagate_forward"].setEnabled(self.canvas.z < cur.session.n_slices - 1)

    # ---- content ---------------------------------------------------------------------------------
    @property
    def current(self) -> SeriesData | None:
        """The series on the canvas."""
        return self.series[self.index] if 0 <= self.index < len(self.series) else None

    @property
    def modified(self) -> bool:
        """Whether any series has edits the node does not have."""
        return any(s.session.modified for s in self.series)

    def load(self, study: StudySummary | None, series: list[SeriesData], title: str, editable: bool) -> None:
        """Show a study's series (the first one on the canvas)."""
        self.study, self.series, self.editable = study, series, editable
        self.index = -1
        self.panel.study_label.setText(title)
        self.panel.set_series([s.summary.title for s in series])
        self.panel.state_label.setText(self._state_text())
        self.canvas.read_only = not editable
        if series:
            self.show_series(0)
        else:
            self.canvas.set_session(None)
        self._update_actions()

    def clear(self) -> None:
        """Nothing open."""
        self.load(None, [], "No study open", editable=False)

    def set_read_only(self, read_only: bool) -> None:
        """Block editing (while the decision is being sent)."""
        self.editable = not read_only and self.study is not None
        self.canvas.read_only = not self.editable
        self._update_actions()

    def set_state(self, study: StudySummary) -> None:
        """The study's new state after a decision."""
        self.study = study
        self.panel.state_label.setText(self._state_text())
        self._update_actions()

    def _state_text(self) -> str:
        if self.study is None:
            return "Offline: labels can be edited and saved to a file, not approved."
        return f"State: <b>{self.study.state}</b>"

    def show_series(self, index: int) -> None:
        """Put series ``index`` on the canvas (keeping each series' slice)."""
        if not 0 <= index < len(self.series) or index == self.index:
            return
        if (old := self.current) is not None:
            old.z = self.canvas.z
        self.index = index
        cur = self.series[index]
        self.canvas.set_session(cur.session, cur.segments)
        for v in cur.hidden:
            self.canvas.overlay.visible[v] = False
        self.canvas.set_overlay_visible(self.acts["overlay"].isChecked())
        if cur.z is not None:
            self.canvas.set_slice(cur.z)
        self.panel.set_segments(cur.segments, self.canvas.overlay.active, cur.hidden)
        if self.panel.series_combo.currentIndex() != index:
            self.panel.series_combo.setCurrentIndex(index)
        self._update_actions()

    # ---- view ------------------------------------------------------------------------------------
    def _overlay_toggled(self, show: bool) -> None:
        self.canvas.set_overlay_visible(show)
        if self.panel.overlay_check.isChecked() != show:
            self.panel.overlay_check.setChecked(show)

    def _active_chosen(self, value: int) -> None:
        self.canvas.set_active(value)

    def _visibility_changed(self, value: int, visible: bool) -> None:
        if (cur := self.current) is not None:
            (cur.hidden.discard if visible else cur.hidden.add)(value)
        self.canvas.set_label_visible(value, visible)

    def ask_slice(self) -> None:
        """Ctrl+G: ask for a slice number (non-blocking)."""
        if (cur := self.current) is None:
            return
        dlg = QInputDialog(self)
        dlg.setWindowTitle("Go to slice")
        dlg.setLabelText(f"Slice (1-{cur.session.n_slices}):")
        dlg.setInputMode(QInputDialog.IntInput)
        dlg.setIntRange(1, cur.session.n_slices)
        dlg.setIntValue(self.canvas.z + 1)
        dlg.intValueSelected.connect(lambda v: self.canvas.set_slice(v - 1))
        self.goto_dialog = dlg
        dlg.open()

    # ---- editing ---------------------------------------------------------------------------------
    def _edited(self, edit: Edit | None = None) -> None:
        if edit is not None:
            self.canvas.refresh_slices(edit.slices)
        self._update_actions()
        self.editsChanged.emit()

    def _run(self, what: str, fn: Callable[[EditSession, int, int], Edit | None]) -> Edit | None:
        cur = self.current
        if cur is None or not self.editable:
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
        if edit is None:
            self.message.emit(f"{what}: nothing changed")
        else:
            self.message.emit(edit.description)
        self._edited(edit)
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
        if cur is None or not self.editable:
            return
        edit = cur.session.undo() if undo else cur.session.redo()
        if edit is None:
            return
        if self.canvas.z not in edit.slices:
            self.canvas.set_slice(edit.slices[0])
        self.message.emit(f"{'undid' if undo else 'redid'} {edit.description}")
        self._edited(edit)
