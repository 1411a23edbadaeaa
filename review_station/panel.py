"""The toolbox beside the canvas: series, muscles, overlay, brush, mask tools, slices, history, decision.

Buttons carry the review page's ``QAction``s, so a button, its menu entry and its shortcut are one thing.
Controls do not take keyboard focus, so arrow keys keep moving through slices (as in Dafne, click the image to
give it the keyboard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QPixmap
from PyQt5.QtWidgets import (
    QAction,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from review_station.domain import Segment


def colour_icon(rgb: Sequence[int], size: int = 14) -> QIcon:
    """A filled square of the muscle's colour."""
    pm = QPixmap(size, size)
    pm.fill(QColor(int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return QIcon(pm)


def _button(action: QAction) -> QToolButton:
    b = QToolButton()
    b.setDefaultAction(action)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    b.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return b


class ToolPanel(QWidget):
    """Controls of the review page; view settings go straight to the signals below."""

    seriesChosen = pyqtSignal(int)
    activeChosen = pyqtSignal(int)
    visibilityChanged = pyqtSignal(int, bool)

    def __init__(self, actions: Mapping[str, QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._filling = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        lay = QVBoxLayout(body)
        scroll.setWidget(body)
        outer.addWidget(scroll)
        self.setMinimumWidth(390)

        self.study_label = QLabel("No study open")
        self.study_label.setWordWrap(True)
        self.study_label.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.study_label)
        self.series_combo = QComboBox()
        self.series_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.series_combo.currentIndexChanged.connect(self._series_changed)
        lay.addWidget(self.series_combo)

        box = QGroupBox("Muscles (click: active, tick: shown)")
        bl = QVBoxLayout(box)
        self.muscles = QListWidget()
        self.muscles.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.muscles.setMinimumHeight(170)
        self.muscles.currentItemChanged.connect(self._active_changed)
        self.muscles.itemChanged.connect(self._item_changed)
        bl.addWidget(self.muscles)
        row = QHBoxLayout()
        self.overlay_check = QCheckBox("Overlay (O)")
        self.overlay_check.setChecked(True)
        self.overlay_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row.addWidget(self.overlay_check)
        row.addWidget(QLabel("Opacity"))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row.addWidget(self.opacity_slider)
        bl.addLayout(row)
        lay.addWidget(box)

        box = QGroupBox("Brush")
        g = QGridLayout(box)
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QToolButton] = {}
        for i, name in enumerate(("paint", "erase", "pan", "zoom")):
            b = _button(actions[f"tool_{name}"])
            self.tool_group.addButton(b)
            self.tool_buttons[name] = b
            g.addWidget(b, 0, i)
        g.addWidget(QLabel("Radius"), 1, 0)
        self.radius_spin = QSpinBox()
        self.radius_spin.setRange(0, 60)
        self.radius_spin.setValue(5)
        self.radius_spin.setSuffix(" px")
        self.radius_spin.setToolTip("brush radius: + / - (also x / y, z, Ctrl+wheel)")
        g.addWidget(self.radius_spin, 1, 1)
        self.shape_combo = QComboBox()
        self.shape_combo.addItems(["round", "square"])
        self.shape_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        g.addWidget(self.shape_combo, 1, 2, 1, 2)
        self.erase_all_check = QCheckBox("Erase all muscles")
        self.erase_all_check.setToolTip("erase every muscle under the brush, not only the active one")
        g.addWidget(self.erase_all_check, 2, 0, 1, 2)
        self.protect_check = QCheckBox("Keep others")
        self.protect_check.setToolTip("paint only unlabelled pixels, never over another muscle")
        g.addWidget(self.protect_check, 2, 2, 1, 2)
        self.intensity_check = QCheckBox("Intensity aware ±")
        self.intensity_check.setToolTip(
            "touch only pixels whose intensity is close to the one where the stroke started "
            "(tolerance in % of the window width)"
        )
        g.addWidget(self.intensity_check, 3, 0, 1, 2)
        self.tolerance_spin = QSpinBox()
        self.tolerance_spin.setRange(1, 100)
        self.tolerance_spin.setValue(10)
        self.tolerance_spin.setSuffix(" % of W")
        g.addWidget(self.tolerance_spin, 3, 2, 1, 2)
        for w in (self.erase_all_check, self.protect_check, self.intensity_check):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        lay.addWidget(box)

        box = QGroupBox("Mask of the active muscle")
        g = QGridLayout(box)
        g.addWidget(_button(actions["grow"]), 0, 0)
        g.addWidget(_button(actions["shrink"]), 0, 1)
        g.addWidget(_button(actions["fill_holes"]), 1, 0)
        g.addWidget(_button(actions["remove_islands"]), 1, 1)
        g.addWidget(QLabel("Islands below"), 2, 0)
        self.island_spin = QSpinBox()
        self.island_spin.setRange(1, 100000)
        self.island_spin.setValue(20)
        self.island_spin.setSuffix(" px")
        g.addWidget(self.island_spin, 2, 1)
        self.all_slices_check = QCheckBox("Apply to all slices")
        self.all_slices_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        g.addWidget(self.all_slices_check, 3, 0, 1, 2)
        self.islands_all_check = QCheckBox("Islands of every muscle")
        self.islands_all_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        g.addWidget(self.islands_all_check, 4, 0, 1, 2)
        lay.addWidget(box)

        box = QGroupBox("Across slices")
        g = QGridLayout(box)
        g.addWidget(_button(actions["interpolate"]), 0, 0)
        g.addWidget(_button(actions["interpolate_block"]), 0, 1)
        g.addWidget(_button(actions["propagate_back"]), 1, 0)
        g.addWidget(_button(actions["propagate_forward"]), 1, 1)
        self.propagate_all_check = QCheckBox("Propagate every muscle")
        self.propagate_all_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        g.addWidget(self.propagate_all_check, 2, 0, 1, 2)
        lay.addWidget(box)

        box = QGroupBox("History and statistics")
        g = QGridLayout(box)
        g.addWidget(_button(actions["undo"]), 0, 0)
        g.addWidget(_button(actions["redo"]), 0, 1)
        lay.addWidget(box)

        g.addWidget(_button(actions["statistics"]), 1, 0, 1, 2)
        lay.addStretch(1)

        box = QGroupBox("Decision")  # below the scrolling tools: always in view
        g = QGridLayout(box)
        g.addWidget(_button(actions["approve"]), 0, 0)
        g.addWidget(_button(actions["reject"]), 0, 1)
        self.state_label = QLabel("")
        self.state_label.setWordWrap(True)
        self.state_label.setTextFormat(Qt.TextFormat.RichText)
        g.addWidget(self.state_label, 1, 0, 1, 2)
        outer.addWidget(box)

    # ---- filling ---------------------------------------------------------------------------------
    def set_series(self, titles: Sequence[str], current: int = 0) -> None:
        """Entries of the series chooser."""
        self._filling = True
        self.series_combo.clear()
        self.series_combo.addItems(list(titles))
        self.series_combo.setCurrentIndex(current if titles else -1)
        self._filling = False

    def set_segments(self, segments: Sequence[Segment], active: int, hidden: set[int] | None = None) -> None:
        """Fill the muscle list (colour, name, visibility tick) and select the active one."""
        self._filling = True
        self.muscles.clear()
        for s in segments:
            item = QListWidgetItem(colour_icon(s.colour), f"{s.name}  [{s.value}]")
            item.setData(Qt.ItemDataRole.UserRole, s.value)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if hidden and s.value in hidden else Qt.CheckState.Checked)
            self.muscles.addItem(item)
            if s.value == active:
                self.muscles.setCurrentItem(item)
        self._filling = False

    def select_muscle(self, value: int) -> None:
        """Make ``value`` the selected row."""
        for i in range(self.muscles.count()):
            item = self.muscles.item(i)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == value:
                self.muscles.setCurrentItem(item)
                return

    # ---- signals ---------------------------------------------------------------------------------
    def _series_changed(self, index: int) -> None:
        if not self._filling and index >= 0:
            self.seriesChosen.emit(index)

    def _active_changed(self, item: QListWidgetItem | None, _prev: QListWidgetItem | None) -> None:
        if not self._filling and item is not None:
            self.activeChosen.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _item_changed(self, item: QListWidgetItem) -> None:
        if not self._filling:
            self.visibilityChanged.emit(
                int(item.data(Qt.ItemDataRole.UserRole)), item.checkState() == Qt.CheckState.Checked
            )
