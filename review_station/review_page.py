"""The review page: canvas (and reformats) + toolbox for the series of one open study, and what they show.

Actions (:mod:`review_station.actions`) are added to the main window so that their shortcuts work anywhere on
the page; buttons in the toolbox show the same actions. Editing commands live in
:class:`~review_station.review_edits.EditCommands`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import QHBoxLayout, QInputDialog, QSplitter, QWidget

from review_station import render, stats
from review_station.actions import ACTIONS, EDITING, make_actions
from review_station.domain import Segment, SeriesSummary, StudySummary
from review_station.editing import EditSession
from review_station.palette import distinct_colours
from review_station.panel import MUSCLE_KEYS, ToolPanel
from review_station.reformat import ReformatView
from review_station.review_edits import EditCommands
from review_station.text import Heading
from review_station.viewer import SliceCanvas

log = logging.getLogger(__name__)


@dataclass
class SeriesData:
    """A series of the open study with its edit session, segment catalogue and the model's draft."""

    summary: SeriesSummary
    session: EditSession
    segments: list[Segment]
    hidden: set[int] = field(default_factory=set)
    z: int | None = None
    draft: np.ndarray | None = None
    strength: dict[int, float] = field(default_factory=dict)  # per-muscle opacity


class ReviewPage(EditCommands, QWidget):
    """Canvas and toolbox for the series of the open study."""

    editsChanged = pyqtSignal()
    message = pyqtSignal(str)
    approveRequested = pyqtSignal()
    approveNextRequested = pyqtSignal()
    rejectRequested = pyqtSignal()
    amendRequested = pyqtSignal()
    resegmentRequested = pyqtSignal()
    statisticsRequested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.study: StudySummary | None = None
        self.heading: Heading | None = None
        self.series: list[SeriesData] = []
        self.index = -1
        self.editable = False
        self._page_shown = True
        self.dice_scores: dict[int, float] = {}  # per muscle, of the series on screen against its draft
        self.acts = make_actions(self)
        self.canvas = SliceCanvas()
        self.coronal = ReformatView("coronal", self.canvas)
        self.sagittal = ReformatView("sagittal", self.canvas)
        self.reformats = QWidget()  # below the axial view: slices run top to bottom, as in a coronal image
        row = QHBoxLayout(self.reformats)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.coronal)
        row.addWidget(self.sagittal)
        self.reformats.hide()
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.canvas)
        self.splitter.addWidget(self.reformats)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self.panel = ToolPanel(self.acts)
        self.panel.preset_combo.addItems(list(render.WINDOW_PRESETS))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.splitter, 1)
        lay.addWidget(self.panel)
        self.setFocusProxy(self.canvas)
        self._wire()
        self._update_actions()

    # ---- wiring ----------------------------------------------------------------------------------
    def _wire(self) -> None:
        a, c, p = self.acts, self.canvas, self.panel
        for name in ("paint", "erase", "pan", "zoom"):
            a[f"tool_{name}"].triggered.connect(lambda _=False, n=name: c.set_tool(n))
        a["brush_bigger"].triggered.connect(lambda: c.set_radius(c.radius + 1))
        a["brush_smaller"].triggered.connect(lambda: c.set_radius(c.radius - 1))
        self.wire_edits()
        for i in range(len(MUSCLE_KEYS)):
            a[f"muscle_{i + 1}"].triggered.connect(lambda _=False, i=i: self.select_nth_muscle(i))
        a["next_muscle"].triggered.connect(lambda: self.cycle_muscle(1))
        a["previous_muscle"].triggered.connect(lambda: self.cycle_muscle(-1))
        a["lock"].triggered.connect(lambda: self.toggle_lock(c.overlay.active))
        a["overlay"].toggled.connect(self._overlay_toggled)
        a["goto"].triggered.connect(self.ask_slice)
        a["fit"].triggered.connect(c.fit)
        a["reset_window"].triggered.connect(lambda: self.apply_preset(0))
        a["next_preset"].triggered.connect(
            lambda: self.apply_preset((p.preset_combo.currentIndex() + 1) % p.preset_combo.count())
        )
        a["show_draft"].toggled.connect(self._show_draft)
        a["show_difference"].toggled.connect(self._show_difference)
        a["reformats"].toggled.connect(self.set_reformats_visible)
        a["statistics"].triggered.connect(self.statisticsRequested)
        a["approve"].triggered.connect(self.approveRequested)
        a["approve_next"].triggered.connect(self.approveNextRequested)
        a["reject"].triggered.connect(self.rejectRequested)
        a["amend"].triggered.connect(self.amendRequested)
        a["resegment"].triggered.connect(self.resegmentRequested)
        c.brushChanged.connect(p.radius_spin.setValue)
        c.labelsEdited.connect(lambda _e: self.after_edit())
        c.sliceChanged.connect(lambda _z: self._slice_changed())
        c.labelPicked.connect(self.pick_muscle)
        c.positionChanged.connect(self._position_changed)
        c.windowChanged.connect(lambda _w, _l: self._recompose_reformats())
        c.styleChanged.connect(self._recompose_reformats)
        p.radius_spin.valueChanged.connect(c.set_radius)
        p.shape_combo.currentTextChanged.connect(lambda s: setattr(c, "shape", s))
        p.erase_all_check.toggled.connect(lambda v: setattr(c, "erase_all", v))
        p.protect_check.toggled.connect(lambda v: setattr(c, "protect_others", v))
        p.intensity_check.toggled.connect(lambda v: setattr(c, "intensity_aware", v))
        p.tolerance_spin.valueChanged.connect(lambda v: setattr(c, "intensity_tolerance", float(v)))
        p.overlay_check.toggled.connect(a["overlay"].setChecked)
        p.opacity_slider.valueChanged.connect(lambda v: c.set_opacity(v / 100.0))
        p.preset_combo.activated.connect(self.apply_preset)
        p.seriesChosen.connect(self.show_series)
        p.activeChosen.connect(self._active_chosen)
        p.visibilityChanged.connect(self._visibility_changed)
        p.lockToggled.connect(self.toggle_lock)
        p.muscleOpacityChosen.connect(self.set_muscle_opacity)
        for spin in (p.radius_spin, p.tolerance_spin, p.island_spin):
            spin.editingFinished.connect(lambda: self.canvas.setFocus())
        for view in (self.coronal, self.sagittal):
            view.sliceRequested.connect(c.set_slice)

    def set_actions_enabled(self, enabled: bool) -> None:
        """Enable the page's shortcuts only while the page is shown."""
        self._page_shown = enabled
        self._update_actions()

    def _update_actions(self) -> None:
        cur = self.current
        has = self._page_shown and cur is not None
        edit = has and self.editable and not self.canvas.showing_reference
        for name in ACTIONS:
            self.acts[name].setEnabled(has)
        for name in (*EDITING, "lock"):
            self.acts[name].setEnabled(edit)
        has_draft = has and cur is not None and cur.draft is not None
        self.acts["show_draft"].setEnabled(has_draft)
        self.acts["show_difference"].setEnabled(has_draft)
        decidable = has and self.study is not None and self.study.state == "PENDING_REVIEW" and self.editable
        for name in ("approve", "approve_next", "reject"):
            self.acts[name].setEnabled(decidable)
        self.acts["amend"].setEnabled(has and self.study is not None and self.study.state in ("APPROVED", "EXPORTED"))
        self.acts["resegment"].setEnabled(decidable and cur is not None and cur.summary.changed_since_draft)
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
        """Whether any series has edits the node (or the file) does not have."""
        return any(s.session.modified for s in self.series)

    def load(
        self, study: StudySummary | None, series: list[SeriesData], heading: Heading | None, editable: bool
    ) -> None:
        """Show a study's series (the first one on the canvas); muscle colours made distinct."""
        for s in series:
            s.segments = distinct_colours(s.segments)
        self.study, self.series, self.editable, self.heading = study, series, editable, heading
        self.index = -1
        self.acts["show_draft"].setChecked(False)
        self.panel.set_heading(heading)
        self.panel.set_series([s.summary.title for s in series])
        self.panel.state_label.setText(self._state_text())
        self.canvas.read_only = not editable
        if series:
            self.show_series(0)
        else:
            self.canvas.set_session(None)
        self._update_dice()
        self._update_actions()

    def clear(self) -> None:
        """Nothing open."""
        self.load(None, [], None, editable=False)

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
            return "Offline: no approval; Ctrl+S saves the labels." if self.series else ""
        return f"State: {self.study.state}"

    def show_series(self, index: int) -> None:
        """Put series ``index`` on the canvas (keeping each series' slice)."""
        if not 0 <= index < len(self.series) or index == self.index:
            return
        if (old := self.current) is not None:
            old.z = self.canvas.z
        self.index = index
        cur = self.series[index]
        self.canvas.set_session(cur.session, cur.segments, cur.draft)
        for v in cur.hidden:
            self.canvas.overlay.visible[v] = False
        for v, op in cur.strength.items():
            self.canvas.overlay.strength[v] = op
        self.canvas.set_overlay_visible(self.acts["overlay"].isChecked())
        if cur.z is not None:
            self.canvas.set_slice(cur.z)
        self.panel.locked = {int(v) for v in np.flatnonzero(cur.session.locked)}
        self.panel.muscle_opacity = dict(cur.strength)
        self.panel.set_segments(cur.segments, self.canvas.overlay.active, cur.hidden)
        if self.panel.series_combo.currentIndex() != index:
            self.panel.series_combo.setCurrentIndex(index)
        self._position_changed(self.canvas.z, *(n // 2 for n in cur.session.labels.shape[1:]))
        self._update_dice()
        self._update_actions()

    # ---- muscles ---------------------------------------------------------------------------------
    def select_nth_muscle(self, index: int) -> None:
        """Keys 1…9, 0: make the muscle at ``index`` of the list active."""
        values = self.panel.values
        if 0 <= index < len(values):
            self.panel.select_muscle(values[index])
            self.canvas.setFocus()

    def cycle_muscle(self, step: int) -> None:
        """Tab / Shift+Tab: the next / previous muscle of the list."""
        values = self.panel.values
        if not values:
            return
        active = self.canvas.overlay.active
        i = values.index(active) if active in values else -step
        self.panel.select_muscle(values[(i + step) % len(values)])
        self.canvas.setFocus()

    def pick_muscle(self, value: int) -> None:
        """Alt+click: the muscle under the pointer becomes active."""
        if value == 0 or not self.panel.select_muscle(value):
            self.message.emit("no muscle under the pointer")
            return
        name = next((s.name for s in self.current.segments if s.value == value), str(value)) if self.current else ""
        self.message.emit(f"active muscle: {name}")

    def toggle_lock(self, value: int) -> None:
        """Lock or unlock a muscle of the series on screen (L: the active one)."""
        cur = self.current
        if cur is None or value == 0:
            return
        locked = not bool(cur.session.locked[value])
        cur.session.set_locked(value, locked)
        (self.panel.locked.add if locked else self.panel.locked.discard)(value)
        self.panel.refresh_marks()
        name = next((s.name for s in cur.segments if s.value == value), str(value))
        self.message.emit(f"{name} {'locked: no tool changes it' if locked else 'unlocked'}")

    def set_muscle_opacity(self, value: int, opacity: float) -> None:
        """Opacity of one muscle, as a fraction of the overlay opacity."""
        cur = self.current
        if cur is None:
            return
        cur.strength[value] = float(opacity)
        self.panel.muscle_opacity[value] = float(opacity)
        self.canvas.overlay.strength[value] = float(opacity)
        self.canvas.set_opacity(self.canvas.overlay.opacity)  # recompose
        self.panel.refresh_marks()

    def _active_chosen(self, value: int) -> None:
        self.canvas.set_active(value)

    def _visibility_changed(self, value: int, visible: bool) -> None:
        if (cur := self.current) is not None:
            (cur.hidden.discard if visible else cur.hidden.add)(value)
        self.canvas.set_label_visible(value, visible)

    # ---- view ------------------------------------------------------------------------------------
    def _overlay_toggled(self, show: bool) -> None:
        self.canvas.set_overlay_visible(show)
        if self.panel.overlay_check.isChecked() != show:
            self.panel.overlay_check.setChecked(show)

    def apply_preset(self, index: int) -> None:
        """Window/level preset ``index`` of :data:`render.WINDOW_PRESETS` (0: automatic)."""
        c, cur = self.canvas, self.current
        if c.quantized is None or cur is None or not 0 <= index < len(render.WINDOW_PRESETS):
            return
        lo, hi, labelled = list(render.WINDOW_PRESETS.values())[index]
        where = cur.session.labels > 0 if labelled else None
        c.set_window(*c.quantized.percentile_window(lo, hi, where))
        self.panel.preset_combo.setCurrentIndex(index)

    def _show_draft(self, show: bool) -> None:
        self.canvas.set_show_reference(show)
        self.message.emit("showing the model's draft (read only; D: back)" if show else "showing your labels")
        self._update_actions()

    def _show_difference(self, show: bool) -> None:
        self.canvas.set_mark_differences(show)
        self._update_dice()

    def _update_dice(self) -> None:
        cur = self.current
        self.dice_scores = {}
        if cur is None or cur.draft is None:
            self.panel.dice_label.setText("")
            return
        values = [s.value for s in cur.segments]
        scores = self.dice_scores = stats.dice_per_label(cur.draft, cur.session.labels, values)
        changed = sorted((d, v) for v, d in scores.items() if not math.isnan(d) and d < 1.0)
        names = {s.value: s.name for s in cur.segments}
        if not changed:
            self.panel.dice_label.setText("Same as the draft (Dice 1 for every muscle).")
            return
        lines = [f"{names.get(v, v)}: {d:.3f}" for d, v in changed]
        self.panel.dice_label.setText("Dice with the draft (changed muscles):\n" + "\n".join(lines[:8]))

    def set_reformats_visible(self, show: bool) -> None:
        """Show or hide the coronal and sagittal reformats."""
        if self.acts["reformats"].isChecked() != show:
            self.acts["reformats"].setChecked(show)
            return
        self.reformats.setVisible(show)
        total = sum(self.splitter.sizes())
        if show and total > 0 and self.splitter.sizes()[1] < 0.25 * total:
            self.splitter.setSizes([int(total * 0.68), total - int(total * 0.68)])
        self._recompose_reformats()

    def _recompose_reformats(self) -> None:
        if self.reformats.isVisible():
            self.coronal.recompose()
            self.sagittal.recompose()

    def _position_changed(self, z: int, y: int, x: int) -> None:
        for view in (self.coronal, self.sagittal):
            view.set_point(z, y, x)

    def _slice_changed(self) -> None:
        z = self.canvas.z
        for view in (self.coronal, self.sagittal):
            view.set_point(z, view.point[1], view.point[2])
        self._update_actions()

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
