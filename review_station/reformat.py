"""Coronal and sagittal reformats of the series on the axial canvas, linked to its cursor (view only).

A reformat is recomposed from the canvas's own tables (window/level, muscle colours), so it always looks like
the axial view. Rows are slices, scaled by the slice spacing; lines mark the axial slice on screen and the
pointer's column (coronal) or row (sagittal). Clicking a reformat moves the axial view to that slice.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from PyQt5.QtCore import QPointF, QRectF, QSize, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QPainter, QPaintEvent, QPen
from PyQt5.QtWidgets import QSizePolicy, QWidget

from review_station import render
from review_station.viewer import SliceCanvas

log = logging.getLogger(__name__)

Plane = Literal["coronal", "sagittal"]


class ReformatView(QWidget):
    """One reformat plane through the point (z, y, x) of a :class:`SliceCanvas`."""

    sliceRequested = pyqtSignal(int)

    def __init__(self, plane: Plane, canvas: SliceCanvas, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plane: Plane = plane
        self.canvas = canvas
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(120, 80)
        self.setToolTip(f"{plane} reformat: click to go to that slice")
        self.point = (0, 0, 0)  # z, y, x
        self._buf = np.zeros((1, 1), dtype=np.uint32)
        self._qimage = render.qimage_of(self._buf)

    def sizeHint(self) -> QSize:
        return QSize(360, 200)

    def set_point(self, z: int, y: int, x: int) -> None:
        """Cut through (y, x) and mark slice z; recompose when the cut moved."""
        cut_moved = (self.point[1] if self.plane == "coronal" else self.point[2]) != (
            y if self.plane == "coronal" else x
        )
        self.point = (z, y, x)
        if cut_moved or self._buf.shape == (1, 1):
            self.recompose()
        else:
            self.update()

    def recompose(self) -> None:
        """Rebuild the plane from the canvas's labels, window and colours."""
        c = self.canvas
        if not self.isVisible() or c.session is None or c.quantized is None:
            return
        _z, y, x = self.point
        h, w = c.session.labels.shape[1:]
        if self.plane == "coronal":
            y = min(max(y, 0), h - 1)
            codes, labels = c.quantized.codes[:, y, :], c.session.labels[:, y, :]
        else:
            x = min(max(x, 0), w - 1)
            codes, labels = c.quantized.codes[:, :, x], c.session.labels[:, :, x]
        grey = c.window_table[codes]
        self._buf = render.compose(np.ascontiguousarray(grey), np.ascontiguousarray(labels), c.colour_table)
        self._qimage = render.qimage_of(self._buf)
        self.update()

    def _layout(self) -> QRectF:
        c = self.canvas
        if c.session is None:
            return QRectF()
        dz, dy, dx = c.session.spacing
        rows, cols = self._buf.shape
        height_mm, width_mm = rows * dz, cols * (dx if self.plane == "coronal" else dy)
        s = min(self.width() / max(width_mm, 1e-6), self.height() / max(height_mm, 1e-6))
        wpx, hpx = width_mm * s, height_mm * s
        return QRectF((self.width() - wpx) / 2.0, (self.height() - hpx) / 2.0, wpx, hpx)

    def paintEvent(self, event: QPaintEvent | None) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        if self.canvas.session is not None and self._buf.shape != (1, 1):
            r = self._layout()
            p.drawImage(r, self._qimage)
            rows, cols = self._buf.shape
            z, y, x = self.point
            across = x if self.plane == "coronal" else y
            p.setPen(QPen(QColor(255, 255, 160), 1))
            zy = r.top() + (z + 0.5) * r.height() / rows
            p.drawLine(QPointF(r.left(), zy), QPointF(r.right(), zy))
            p.setPen(QPen(QColor(255, 255, 160, 110), 1, Qt.PenStyle.DashLine))
            ax = r.left() + (across + 0.5) * r.width() / cols
            p.drawLine(QPointF(ax, r.top()), QPointF(ax, r.bottom()))
            p.setPen(QColor(255, 255, 160))
            p.drawText(6, 14, self.plane)
        p.end()

    def slice_at(self, pos: QPointF) -> int | None:
        """The slice under a widget point, or None outside the image."""
        r = self._layout()
        if r.isEmpty() or self._buf.shape == (1, 1) or not r.contains(pos):
            return None
        rows = self._buf.shape[0]
        return min(max(int((pos.y() - r.top()) / r.height() * rows), 0), rows - 1)

    def mousePressEvent(self, event) -> None:
        z = self.slice_at(QPointF(event.pos()))
        if z is not None and event.button() == Qt.MouseButton.LeftButton:
            self.sliceRequested.emit(z)
        event.accept()
