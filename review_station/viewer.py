"""The canvas: one slice with every muscle overlaid, brush editing, window/level, zoom and pan.

Drawing is a ``QImage`` over a numpy buffer composed by :mod:`review_station.render`; a brush dab recomposes
and repaints only the box it touched. Mouse (as in Dafne): left uses the chosen tool, Shift+left paints,
Ctrl+left erases, right-drag windows, middle-drag pans, wheel scrolls slices, Ctrl+wheel sizes the brush,
Alt+wheel zooms, Alt+click makes the muscle under the pointer active. Keys: arrows/PgUp/PgDn/Home/End move
between slices. The canvas can show the model's draft instead of the labels being edited (read only) and hatch
the pixels where the two differ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from PyQt5.QtCore import QPoint, QPointF, QRect, QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen, QTransform
from PyQt5.QtWidgets import QSizePolicy, QWidget

from review_station import render
from review_station.domain import Segment
from review_station.editing import EditSession
from review_station.tools import BBox, BrushShape

log = logging.getLogger(__name__)

TOOLS = ("paint", "erase", "pan", "zoom")
MAX_RADIUS = 60


class SliceCanvas(QWidget):
    """Shows slice ``z`` of an :class:`EditSession` and edits it with the brush."""

    sliceChanged = pyqtSignal(int)
    labelsEdited = pyqtSignal(object)  # the Edit recorded (a stroke)
    windowChanged = pyqtSignal(float, float)
    brushChanged = pyqtSignal(int)
    zoomChanged = pyqtSignal(float)
    cursorInfo = pyqtSignal(str)
    toolChanged = pyqtSignal(str)
    labelPicked = pyqtSignal(int)  # Alt+click: the label value under the pointer (0: none)
    positionChanged = pyqtSignal(int, int, int)  # (z, y, x) of the image pixel under the pointer
    styleChanged = pyqtSignal()  # colours, opacity or visibility of the muscles

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(200, 200)
        self.session: EditSession | None = None
        self.segments: list[Segment] = []
        self.overlay = render.OverlayStyle()
        self.z = 0
        self.window_width = 1.0
        self.window_level = 0.5
        self.scale = 1.0
        self.offset = QPointF(0.0, 0.0)
        self.tool = "paint"
        self.radius = 5
        self.shape: BrushShape = "round"
        self.erase_all = False
        self.intensity_aware = False
        self.intensity_tolerance = 10.0  # percent of the window width
        self.protect_others = False
        self.read_only = False
        self.reference: np.ndarray | None = None  # the draft labels, for "show draft" and differences
        self.show_reference = False
        self.mark_differences = False
        self.paint_count = 0
        self._quant: render.Quantized | None = None
        self._wl_lut = np.zeros(render.N_CODES, dtype=np.uint8)
        self._comp_lut = render.composite_lut(self.overlay)
        self._grey = np.zeros((1, 1), dtype=np.uint8)
        self._buf = np.zeros((1, 1), dtype=np.uint32)
        self._qimage = render.qimage_of(self._buf)
        self._mouse: QPointF | None = None
        self._drag: str | None = None
        self._drag_start = QPointF()
        self._drag_state: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
        self._fitted = False

    # ---- data ------------------------------------------------------------------------------------
    def set_session(
        self, session: EditSession | None, segments: Sequence[Segment] = (), reference: np.ndarray | None = None
    ) -> None:
        """Show another series (None: nothing) with its draft ``reference``; resets slice, window and zoom."""
        self.session = session
        fits = reference is not None and session is not None and reference.shape == session.labels.shape
        self.reference = reference if fits else None
        self.segments = list(segments)
        active = self.overlay.active
        values = {s.value for s in self.segments}
        self.overlay = render.OverlayStyle.from_segments(
            self.segments, opacity=self.overlay.opacity, show=self.overlay.show
        )
        self.overlay.active = active if active in values else (self.segments[0].value if self.segments else 0)
        self._comp_lut = render.composite_lut(self.overlay)
        if session is None:
            self._quant = None
            self._buf = np.zeros((1, 1), dtype=np.uint32)
            self._qimage = render.qimage_of(self._buf)
            self.update()
            return
        self._quant = render.Quantized(session.image)
        h, w = session.labels.shape[1:]
        self._buf = np.zeros((h, w), dtype=np.uint32)
        self._qimage = render.qimage_of(self._buf)
        self.z = session.n_slices // 2
        self.window_width, self.window_level = self._quant.auto_window()
        self._wl_lut = render.window_lut(self._quant, self.window_width, self.window_level)
        self._fitted = False
        self.fit()
        self.refresh()
        self.sliceChanged.emit(self.z)
        self.windowChanged.emit(self.window_width, self.window_level)

    @property
    def quantized(self) -> render.Quantized | None:
        """The image as 16-bit codes (None without a series)."""
        return self._quant

    @property
    def window_table(self) -> np.ndarray:
        """Grey level of each image code under the current window/level."""
        return self._wl_lut

    @property
    def colour_table(self) -> np.ndarray:
        """The composite table of the current overlay style."""
        return self._comp_lut

    @property
    def has_data(self) -> bool:
        """Whether a series is shown."""
        return self.session is not None and self._quant is not None

    def refresh(self, box: BBox | None = None) -> None:
        """Recompose (``box`` of) the current slice from the labels and schedule its repaint."""
        if not self.has_data:
            return
        assert self.session is not None and self._quant is not None
        if box is None:
            self._grey = self._wl_lut[self._quant.codes[self.z]]
            self._compose(None)
            self.update()
        else:
            self._compose(box)
            self.update(self._widget_rect(box))

    @property
    def showing_reference(self) -> bool:
        """Whether the draft is on screen instead of the labels being edited."""
        return self.show_reference and self.reference is not None

    def shown_labels(self) -> np.ndarray:
        """The label slice on screen: the draft's or the edited one."""
        assert self.session is not None
        if self.showing_reference:
            assert self.reference is not None
            return self.reference[self.z]
        return self.session.labels[self.z]

    def _compose(self, box: BBox | None) -> None:
        labels = self.shown_labels()
        render.compose_into(self._buf, self._grey, labels, self._comp_lut, box)
        if self.mark_differences and self.reference is not None and self.session is not None:
            other = self.session.labels[self.z] if self.showing_reference else self.reference[self.z]
            render.mark_differences(self._buf, labels, other, box)

    def set_show_reference(self, show: bool) -> None:
        """Show the draft (read only) instead of the labels being edited."""
        if self.session is not None and self.session.stroking:
            self._finish_stroke()
        self.show_reference = bool(show)
        self.refresh()

    def set_mark_differences(self, mark: bool) -> None:
        """Hatch the pixels where the labels differ from the draft."""
        self.mark_differences = bool(mark)
        self.refresh()

    def refresh_slices(self, slices: Sequence[int]) -> None:
        """Labels of ``slices`` changed (undo, tools): redraw if the current slice is among them."""
        if self.z in slices:
            self.refresh()

    # ---- overlay style ---------------------------------------------------------------------------
    def _restyle(self) -> None:
        self._comp_lut = render.composite_lut(self.overlay)
        self.refresh()
        self.styleChanged.emit()

    def set_active(self, value: int) -> None:
        """The muscle that the brush paints and that is highlighted."""
        self.overlay.active = int(value)
        self._restyle()

    def set_opacity(self, opacity: float) -> None:
        """Overlay opacity 0..1."""
        self.overlay.opacity = float(opacity)
        self._restyle()

    def set_overlay_visible(self, show: bool) -> None:
        """Show or hide every muscle."""
        self.overlay.show = bool(show)
        self._restyle()

    def set_label_visible(self, value: int, visible: bool) -> None:
        """Show or hide one muscle."""
        self.overlay.visible[int(value)] = bool(visible)
        self._restyle()

    # ---- navigation ------------------------------------------------------------------------------
    def set_slice(self, z: int) -> None:
        """Go to slice ``z`` (clamped)."""
        if not self.has_data:
            return
        assert self.session is not None
        z = min(max(int(z), 0), self.session.n_slices - 1)
        if z == self.z:
            return
        if self.session.stroking:
            self._finish_stroke()
        self.z = z
        self.refresh()
        self.sliceChanged.emit(z)
        self._emit_cursor_info()

    def step_slice(self, delta: int) -> None:
        """Move ``delta`` slices."""
        self.set_slice(self.z + delta)

    def set_window(self, window: float, level: float) -> None:
        """Window width and level in image units."""
        if self._quant is None:
            return
        self.window_width, self.window_level = max(float(window), self._quant.step), float(level)
        self._wl_lut = render.window_lut(self._quant, self.window_width, self.window_level)
        self.refresh()
        self.windowChanged.emit(self.window_width, self.window_level)

    def reset_window(self) -> None:
        """Back to the automatic window."""
        if self._quant is not None:
            self.set_window(*self._quant.auto_window())

    def fit(self) -> None:
        """Zoom so the whole slice fits the widget, centred."""
        if not self.has_data:
            return
        h, w = self._buf.shape
        s = min(self.width() / w, self.height() / h)
        self.scale = max(s, 0.05)
        self.offset = QPointF((self.width() - w * self.scale) / 2.0, (self.height() - h * self.scale) / 2.0)
        self._fitted = True
        self.update()
        self.zoomChanged.emit(self.scale)

    def zoom_at(self, factor: float, anchor: QPointF | None = None) -> None:
        """Multiply the zoom by ``factor`` keeping the image point under ``anchor`` (widget) in place."""
        anchor = anchor if anchor is not None else QPointF(self.width() / 2.0, self.height() / 2.0)
        new = min(max(self.scale * factor, 0.1), 40.0)
        ix = (anchor.x() - self.offset.x()) / self.scale
        iy = (anchor.y() - self.offset.y()) / self.scale
        self.scale = new
        self.offset = QPointF(anchor.x() - ix * new, anchor.y() - iy * new)
        self._fitted = False
        self.update()
        self.zoomChanged.emit(self.scale)

    def pan_by(self, dx: float, dy: float) -> None:
        """Move the image by (dx, dy) widget pixels."""
        self.offset = QPointF(self.offset.x() + dx, self.offset.y() + dy)
        self._fitted = False
        self.update()

    # ---- brush settings --------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        """``paint``, ``erase``, ``pan`` or ``zoom``."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.tool = tool
        self.setCursor(
            Qt.CursorShape.OpenHandCursor
            if tool == "pan"
            else Qt.CursorShape.SizeVerCursor
            if tool == "zoom"
            else Qt.CursorShape.CrossCursor
        )
        self.update()
        self.toolChanged.emit(tool)

    def set_radius(self, radius: int) -> None:
        """Brush radius in image pixels (0 = one pixel)."""
        radius = min(max(int(radius), 0), MAX_RADIUS)
        if radius != self.radius:
            old = self._cursor_rect()
            self.radius = radius
            self.update(old.united(self._cursor_rect()))
            self.brushChanged.emit(radius)

    # ---- coordinates -----------------------------------------------------------------------------
    def widget_to_image(self, p: QPointF) -> tuple[float, float]:
        """(y, x) pixel coordinates (pixel centres at integers) of a widget point."""
        return ((p.y() - self.offset.y()) / self.scale - 0.5, (p.x() - self.offset.x()) / self.scale - 0.5)

    def image_to_widget(self, y: float, x: float) -> QPointF:
        """Widget point at the centre of image pixel (y, x)."""
        return QPointF(self.offset.x() + (x + 0.5) * self.scale, self.offset.y() + (y + 0.5) * self.scale)

    def _widget_rect(self, box: BBox) -> QRect:
        y0, y1, x0, x1 = box
        r = QRectF(
            self.offset.x() + x0 * self.scale, self.offset.y() + y0 * self.scale,
            (x1 - x0) * self.scale, (y1 - y0) * self.scale,
        )  # fmt: skip
        return r.toAlignedRect().adjusted(-1, -1, 1, 1)

    def _cursor_rect(self) -> QRect:
        if self._mouse is None:
            return QRect()
        y, x = self.widget_to_image(self._mouse)
        r = self.radius
        cy, cx = round(y), round(x)
        return self._widget_rect((cy - r, cy + r + 1, cx - r, cx + r + 1)).adjusted(-2, -2, 2, 2)

    # ---- editing ---------------------------------------------------------------------------------
    def _stroke_kind(self, modifiers: Qt.KeyboardModifiers) -> str | None:
        if modifiers & Qt.KeyboardModifier.ShiftModifier:
            return "paint"
        if modifiers & Qt.KeyboardModifier.ControlModifier:
            return "erase"
        return self.tool if self.tool in ("paint", "erase") else None

    def _begin_stroke(self, kind: str, p: QPointF) -> None:
        assert self.session is not None
        tol = None
        if self.intensity_aware:
            tol = self.window_width * self.intensity_tolerance / 100.0
        box = self.session.begin_stroke(
            self.z,
            self.widget_to_image(p),
            value=self.overlay.active,
            radius=self.radius,
            shape=self.shape,
            erase=kind == "erase",
            erase_all=self.erase_all,
            intensity_tolerance=tol,
            protect_others=self.protect_others,
        )
        if box is not None:
            self.refresh(box)

    def _finish_stroke(self) -> None:
        if self.session is None:
            return
        edit = self.session.end_stroke()
        if edit is not None:
            self.labelsEdited.emit(edit)

    # ---- events ----------------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        if self._fitted or not self.has_data:
            self.fit()
        super().resizeEvent(event)

    def mousePressEvent(self, event) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if not self.has_data:
            return
        p = QPointF(event.pos())
        self._mouse = p
        self._drag_start = p
        btn = event.button()
        if btn == Qt.MouseButton.LeftButton and event.modifiers() & Qt.KeyboardModifier.AltModifier:
            self.labelPicked.emit(self.label_at(p))
            event.accept()
            return
        if btn == Qt.MouseButton.RightButton:
            self._drag = "window"
            self._drag_state = (self.window_width, self.window_level, 0.0, 0.0)
        elif btn == Qt.MouseButton.MiddleButton or (
            btn == Qt.MouseButton.LeftButton and self.tool == "pan" and not event.modifiers()
        ):
            self._drag = "pan"
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif btn == Qt.MouseButton.LeftButton and self.tool == "zoom" and not event.modifiers():
            self._drag = "zoom"
            self._drag_state = (self.scale, 0.0, 0.0, 0.0)
        elif btn == Qt.MouseButton.LeftButton:
            kind = self._stroke_kind(event.modifiers())
            if kind is None:
                return
            if self.read_only:
                self.cursorInfo.emit("read only: this study cannot be edited now")
                return
            if self.showing_reference:
                self.cursorInfo.emit("showing the model's draft: press D to go back to your labels")
                return
            if kind == "paint" and self.overlay.active == 0:
                self.cursorInfo.emit("choose a muscle to paint")
                return
            self._drag = "stroke"
            self._begin_stroke(kind, p)
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        p = QPointF(event.pos())
        old_cursor = self._cursor_rect()
        last = self._mouse
        self._mouse = p
        if self._drag == "stroke" and self.session is not None and self.session.stroking:
            box = self.session.stroke_to(self.widget_to_image(p))
            if box is not None:
                self._compose(box)
                self.update(self._widget_rect(box).united(old_cursor).united(self._cursor_rect()))
            else:
                self.update(old_cursor.united(self._cursor_rect()))
        elif self._drag == "window":
            w0, l0, _, _ = self._drag_state
            d = p - self._drag_start
            sens = max(w0, 1e-6) / 400.0
            self.set_window(max(w0 + d.x() * sens, 1e-6), l0 + d.y() * sens)
        elif self._drag == "pan" and last is not None:
            self.pan_by(p.x() - last.x(), p.y() - last.y())
        elif self._drag == "zoom":
            s0 = self._drag_state[0]
            factor = math.exp(-(p.y() - self._drag_start.y()) / 150.0)
            self.zoom_at(s0 * factor / self.scale, self._drag_start)
        else:
            self.update(old_cursor.united(self._cursor_rect()))
        self._emit_cursor_info()

    def mouseReleaseEvent(self, event) -> None:
        if self._drag == "stroke":
            self._finish_stroke()
        if self._drag == "pan":
            self.set_tool(self.tool)
        self._drag = None
        event.accept()

    def leaveEvent(self, event) -> None:
        old = self._cursor_rect()
        self._mouse = None
        self.update(old)
        super().leaveEvent(event)

    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()  # Qt turns Alt+wheel into horizontal
        if delta == 0 or not self.has_data:
            return
        steps = 1 if delta > 0 else -1
        mods = event.modifiers()
        if mods & Qt.KeyboardModifier.ControlModifier:
            self.set_radius(self.radius + steps)
        elif mods & Qt.KeyboardModifier.AltModifier:
            self.zoom_at(1.25 if steps > 0 else 0.8, QPointF(event.pos()))
        else:
            self.step_slice(-steps)  # wheel towards you (down) = next slice
        event.accept()

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if not self.has_data:
            super().keyPressEvent(event)
            return
        assert self.session is not None
        if key in (Qt.Key.Key_Left, Qt.Key.Key_Up, Qt.Key.Key_PageUp):
            self.step_slice(-1)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Down, Qt.Key.Key_PageDown):
            self.step_slice(1)
        elif key == Qt.Key.Key_Home:
            self.set_slice(0)
        elif key == Qt.Key.Key_End:
            self.set_slice(self.session.n_slices - 1)
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def label_at(self, p: QPointF) -> int:
        """The label value shown at widget point ``p`` (0 outside the image or on background)."""
        if not self.has_data:
            return 0
        assert self.session is not None
        y, x = (round(c) for c in self.widget_to_image(p))
        h, w = self.session.labels.shape[1:]
        return int(self.shown_labels()[y, x]) if 0 <= y < h and 0 <= x < w else 0

    def _emit_cursor_info(self) -> None:
        if self._mouse is None or not self.has_data:
            return
        assert self.session is not None
        y, x = (round(c) for c in self.widget_to_image(self._mouse))
        h, w = self.session.labels.shape[1:]
        if not (0 <= y < h and 0 <= x < w):
            return
        self.positionChanged.emit(self.z, y, x)
        v = int(self.shown_labels()[y, x])
        name = next((s.name for s in self.segments if s.value == v), "—" if v == 0 else f"label {v}")
        value = float(self.session.image[self.z, y, x])
        self.cursorInfo.emit(f"x {x}  y {y}  value {value:.1f}  {name}")

    # ---- painting --------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent | None) -> None:
        p = QPainter(self)
        clip = event.rect() if event is not None else self.rect()
        p.fillRect(clip, QColor(0, 0, 0))
        if self.has_data:
            p.setTransform(QTransform(self.scale, 0, 0, self.scale, self.offset.x(), self.offset.y()))
            p.drawImage(QPointF(0, 0), self._qimage)
            p.resetTransform()
            self._paint_cursor(p)
            hud = QRect(6, 4, 360, 40)
            if clip.intersects(hud):
                self._paint_hud(p, hud)
        p.end()
        self.paint_count += 1

    def _paint_cursor(self, p: QPainter) -> None:
        if self._mouse is None or self.tool not in ("paint", "erase") or self._drag in ("window", "pan", "zoom"):
            return
        y, x = self.widget_to_image(self._mouse)
        r = self.radius
        cy, cx = round(y), round(x)
        rect = QRectF(self._widget_rect((cy - r, cy + r + 1, cx - r, cx + r + 1))).adjusted(1, 1, -1, -1)
        colour = QColor(*(int(c) for c in self.overlay.colours[self.overlay.active]))
        pen = QPen(colour if self.tool == "paint" else QColor(255, 255, 255), 1.5)
        if self.tool == "erase":
            pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        if self.shape == "round":
            p.setRenderHint(QPainter.Antialiasing, True)
            p.drawEllipse(rect)
            p.setRenderHint(QPainter.Antialiasing, False)
        else:
            p.drawRect(rect)

    def _paint_hud(self, p: QPainter, rect: QRect) -> None:
        assert self.session is not None
        f = QFont(self.font())
        f.setPointSizeF(max(f.pointSizeF(), 9.0))
        p.setFont(f)
        text = (
            f"Slice {self.z + 1}/{self.session.n_slices}   W {self.window_width:.0f}"
            f"  L {self.window_level:.0f}   Zoom {self.scale * 100:.0f}%"
        )
        p.setPen(QColor(0, 0, 0))
        p.drawText(rect.translated(1, 1), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, text)
        p.setPen(QColor(255, 255, 160))
        p.drawText(rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, text)

    def sizeHint(self):
        from PyQt5.QtCore import QSize

        return QSize(720, 720)

    def point_of_pixel(self, y: int, x: int) -> QPoint:
        """Integer widget position of image pixel (y, x), for tests and scripts driving the mouse."""
        return self.image_to_widget(y, x).toPoint()
