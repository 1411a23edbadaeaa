"""The toolbox beside the canvas: who is on screen, series, muscles, tool tabs, decision.

Buttons carry the review page's ``QAction``s, so a button, its menu entry and its shortcut are one thing.
Controls do not take keyboard focus, so arrow keys keep moving through slices (as in Dafne, click the image to
give it the keyboard). The muscle list takes the height it needs (24 thigh muscles fit at 1920×1080); the
tools sit in tabs so that the panel is usable at 1366×768. Patient text is plain text, never rich text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PyQt5.QtCore import QModelIndex, QPoint, QSize, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QIcon, QPixmap
from PyQt5.QtWidgets import (
    QAction,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from review_station.domain import Segment
from review_station.text import Heading

MUSCLE_KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")  # the first ten muscles of the list
OPACITY_STEPS = (100, 75, 50, 25, 0)  # per-muscle opacity, % of the overlay opacity


def colour_icon(rgb: Sequence[int], size: int = 14) -> QIcon:
    """A filled square of the muscle's colour."""
    pm = QPixmap(size, size)
    pm.fill(QColor(int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return QIcon(pm)


def plain_label(text: str = "", *, bold: bool = False, wrap: bool = True) -> QLabel:
    """A label that never interprets its text as rich text (for DICOM strings)."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    label.setText(text)
    if bold:
        f = QFont(label.font())
        f.setBold(True)
        label.setFont(f)
    return label


def bold_label(text: str) -> QLabel:
    """A bold plain-text heading."""
    return plain_label(text, bold=True, wrap=False)


class CompactRows(QStyledItemDelegate):
    """Rows as high as the text and no more, so that 24 muscles fit the list at 1080 pixels."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        size = super().sizeHint(option, index)
        return QSize(size.width(), max(option.fontMetrics.height(), 14) + 1)


def _button(action: QAction) -> QToolButton:
    b = QToolButton()
    b.setDefaultAction(action)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    b.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return b


def _grid(page: QWidget) -> QGridLayout:
    g = QGridLayout(page)
    g.setContentsMargins(4, 4, 4, 4)
    g.setVerticalSpacing(2)
    return g


def _check(text: str, tip: str = "") -> QCheckBox:
    c = QCheckBox(text)
    c.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    if tip:
        c.setToolTip(tip)
    return c


class ToolPanel(QWidget):
    """Controls of the review page; view settings go straight to the signals below."""

    seriesChosen = pyqtSignal(int)
    activeChosen = pyqtSignal(int)
    visibilityChanged = pyqtSignal(int, bool)
    lockToggled = pyqtSignal(int)
    muscleOpacityChosen = pyqtSignal(int, float)

    def __init__(self, actions: Mapping[str, QAction], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._filling = False
        self._segments: list[Segment] = []
        self.locked: set[int] = set()
        self.muscle_opacity: dict[int, float] = {}
        self.setMinimumWidth(330)
        self.setMaximumWidth(420)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 0, 0, 0)
        lay.setSpacing(2)

        self.patient_label = plain_label("No study open", bold=True)
        self.patient_id_label = plain_label("")
        self.study_label = plain_label("")
        for w in (self.patient_label, self.patient_id_label, self.study_label):
            w.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lay.addWidget(w)
        self.series_combo = QComboBox()
        self.series_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.series_combo.currentIndexChanged.connect(self._series_changed)
        lay.addWidget(self.series_combo)

        title = bold_label("Muscles — keys 1…9, 0, Tab; Alt+click")
        title.setToolTip(
            "1…9, 0: the first ten muscles; Tab / Shift+Tab: next / previous; Alt+click: the one under the pointer"
        )
        lay.addWidget(title)
        self.muscles = QListWidget()
        self.muscles.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.muscles.setMinimumHeight(120)
        self.muscles.setUniformItemSizes(True)
        self.muscles.setIconSize(QSize(12, 12))
        self.muscles.setItemDelegate(CompactRows(self.muscles))
        self.muscles.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.muscles.setToolTip("click: active muscle; tick: shown; right-click: lock (L) and opacity")
        self.muscles.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.muscles.customContextMenuRequested.connect(self._context_menu)
        self.muscles.currentItemChanged.connect(self._active_changed)
        self.muscles.itemChanged.connect(self._item_changed)
        lay.addWidget(self.muscles, 1)
        row = QHBoxLayout()
        self.overlay_check = _check("Overlay (O)")
        self.overlay_check.setChecked(True)
        row.addWidget(self.overlay_check)
        row.addWidget(QLabel("Opacity"))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row.addWidget(self.opacity_slider)
        lay.addLayout(row)

        self.tabs = QTabWidget()
        self.tabs.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.tabs.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)
        self.tabs.addTab(self._brush_tab(actions), "Brush")
        self.tabs.addTab(self._mask_tab(actions), "Mask")
        self.tabs.addTab(self._slices_tab(actions), "Slices")
        self.tabs.addTab(self._review_tab(actions), "Review")
        lay.addWidget(self.tabs)

        lay.addWidget(bold_label("Decision"))  # always in view
        row = QHBoxLayout()
        for name in ("approve_next", "approve", "reject"):
            row.addWidget(_button(actions[name]))
        lay.addLayout(row)
        self.state_label = plain_label("", wrap=False)
        lay.addWidget(self.state_label)

    # ---- tabs ------------------------------------------------------------------------------------
    def _brush_tab(self, actions: Mapping[str, QAction]) -> QWidget:
        page = QWidget()
        g = _grid(page)
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
        self.erase_all_check = _check(
            "Erase all muscles", "erase every muscle under the brush, not only the active one"
        )
        g.addWidget(self.erase_all_check, 2, 0, 1, 2)
        self.protect_check = _check("Keep others", "paint only unlabelled pixels, never over another muscle")
        g.addWidget(self.protect_check, 2, 2, 1, 2)
        self.intensity_check = _check(
            "Intensity aware ±",
            "touch only pixels whose intensity is close to the one where the stroke started "
            "(tolerance in % of the window width)",
        )
        g.addWidget(self.intensity_check, 3, 0, 1, 2)
        self.tolerance_spin = QSpinBox()
        self.tolerance_spin.setRange(1, 100)
        self.tolerance_spin.setValue(10)
        self.tolerance_spin.setSuffix(" % of W")
        g.addWidget(self.tolerance_spin, 3, 2, 1, 2)
        g.addWidget(_button(actions["undo"]), 4, 0, 1, 2)
        g.addWidget(_button(actions["redo"]), 4, 2, 1, 2)
        return page

    def _mask_tab(self, actions: Mapping[str, QAction]) -> QWidget:
        page = QWidget()
        g = _grid(page)
        g.addWidget(_button(actions["grow"]), 0, 0)
        g.addWidget(_button(actions["shrink"]), 0, 1)
        g.addWidget(_button(actions["fill_holes"]), 1, 0)
        g.addWidget(_button(actions["remove_islands"]), 1, 1)
        g.addWidget(_button(actions["smooth"]), 2, 0)
        g.addWidget(_button(actions["lock"]), 2, 1)
        g.addWidget(QLabel("Islands below"), 3, 0)
        self.island_spin = QSpinBox()
        self.island_spin.setRange(1, 100000)
        self.island_spin.setValue(20)
        self.island_spin.setSuffix(" px")
        g.addWidget(self.island_spin, 3, 1)
        self.all_slices_check = _check("Apply to all slices")
        g.addWidget(self.all_slices_check, 4, 0)
        self.islands_all_check = _check("Islands of every muscle")
        g.addWidget(self.islands_all_check, 4, 1)
        return page

    def _slices_tab(self, actions: Mapping[str, QAction]) -> QWidget:
        page = QWidget()
        g = _grid(page)
        g.addWidget(_button(actions["interpolate"]), 0, 0)
        g.addWidget(_button(actions["interpolate_block"]), 0, 1)
        g.addWidget(_button(actions["propagate_back"]), 1, 0)
        g.addWidget(_button(actions["propagate_forward"]), 1, 1)
        self.propagate_all_check = _check("Propagate every muscle")
        g.addWidget(self.propagate_all_check, 2, 0, 1, 2)
        return page

    def _review_tab(self, actions: Mapping[str, QAction]) -> QWidget:
        page = QWidget()
        g = _grid(page)
        g.addWidget(QLabel("Window"), 0, 0)
        self.preset_combo = QComboBox()
        self.preset_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        g.addWidget(self.preset_combo, 0, 1)
        g.addWidget(_button(actions["show_draft"]), 1, 0)
        g.addWidget(_button(actions["show_difference"]), 1, 1)
        g.addWidget(_button(actions["reformats"]), 2, 0)
        g.addWidget(_button(actions["statistics"]), 2, 1)
        self.dice_label = plain_label("")
        self.dice_label.setToolTip("agreement of your labels with the model's draft, per muscle")
        g.addWidget(self.dice_label, 3, 0, 1, 2)
        return page

    # ---- filling ---------------------------------------------------------------------------------
    def set_heading(self, heading: Heading | None) -> None:
        """Patient, patient ID (always shown) and study of what is on screen; plain text."""
        if heading is None:
            self.patient_label.setText("No study open")
            self.patient_id_label.setText("")
            self.study_label.setText("")
            return
        self.patient_label.setText(heading.patient)
        self.patient_id_label.setText(f"Patient ID: {heading.patient_id}")
        self.study_label.setText(heading.study)

    def set_series(self, titles: Sequence[str], current: int = 0) -> None:
        """Entries of the series chooser."""
        self._filling = True
        self.series_combo.clear()
        self.series_combo.addItems(list(titles))
        self.series_combo.setCurrentIndex(current if titles else -1)
        self._filling = False

    def set_segments(self, segments: Sequence[Segment], active: int, hidden: set[int] | None = None) -> None:
        """Fill the muscle list (key, colour, name, visibility tick) and select the active one."""
        self._filling = True
        self._segments = list(segments)
        self.muscles.clear()
        for i, s in enumerate(segments):
            item = QListWidgetItem(colour_icon(s.colour), self._item_text(i, s))
            item.setData(Qt.ItemDataRole.UserRole, s.value)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if hidden and s.value in hidden else Qt.CheckState.Checked)
            self.muscles.addItem(item)
            if s.value == active:
                self.muscles.setCurrentItem(item)
        self._filling = False

    def _item_text(self, index: int, s: Segment) -> str:
        key = MUSCLE_KEYS[index] if index < len(MUSCLE_KEYS) else "\u2007"  # a digit-wide space
        marks = []
        if s.value in self.locked:
            marks.append("locked")
        op = self.muscle_opacity.get(s.value, 1.0)
        if op < 1.0:
            marks.append(f"{op * 100:.0f}%")
        suffix = f"  [{', '.join(marks)}]" if marks else ""
        return f"{key}   {s.name}{suffix}"

    def refresh_marks(self) -> None:
        """Redraw lock and opacity marks of the rows."""
        self._filling = True
        for i, s in enumerate(self._segments):
            item = self.muscles.item(i)
            if item is not None:
                item.setText(self._item_text(i, s))
        self._filling = False

    @property
    def values(self) -> list[int]:
        """Label values in list order."""
        return [s.value for s in self._segments]

    def select_muscle(self, value: int) -> bool:
        """Make ``value`` the selected row (scrolled into view); False if it is not in the list."""
        for i in range(self.muscles.count()):
            item = self.muscles.item(i)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == value:
                self.muscles.setCurrentItem(item)
                self.muscles.scrollToItem(item)
                return True
        return False

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

    def _context_menu(self, pos: QPoint) -> None:
        item = self.muscles.itemAt(pos)
        if item is None:
            return
        value = int(item.data(Qt.ItemDataRole.UserRole))
        menu = QMenu(self)
        lock = menu.addAction("Unlock" if value in self.locked else "Lock (not painted over)")
        assert lock is not None
        lock.triggered.connect(lambda: self.lockToggled.emit(value))
        menu.addSeparator()
        for pct in OPACITY_STEPS:
            a = menu.addAction(f"Opacity {pct} %")
            assert a is not None
            a.triggered.connect(lambda _=False, p=pct: self.muscleOpacityChosen.emit(value, p / 100.0))
        viewport = self.muscles.viewport()
        assert viewport is not None
        self.context_menu = menu
        menu.popup(viewport.mapToGlobal(pos))
