"""Compose an image slice and its label overlay into 32-bit pixels with lookup tables (numpy only).

The hot path (a brush dab) recomposes only the changed box: one gather through a precomputed table indexed by
``(edge, label, grey)``. Window/level is a second table from 16-bit codes of the image to grey levels, so
windowing never touches floats. The result buffer is wrapped by a ``QImage`` without copying.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from review_station.domain import Segment

N_CODES = 65536


class Quantized:
    """An image volume as uint16 codes spanning its intensity range, for window/level by table lookup."""

    def __init__(self, image: np.ndarray) -> None:
        finite = image[np.isfinite(image)] if not np.isfinite(image).all() else image
        self.lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        self.step = (hi - self.lo) / (N_CODES - 1) if hi > self.lo else 1.0
        codes = np.nan_to_num((image - self.lo) / self.step, nan=0.0, posinf=N_CODES - 1, neginf=0.0)
        self.codes = np.clip(np.rint(codes), 0, N_CODES - 1).astype(np.uint16)
        self.hi = self.lo + self.step * (N_CODES - 1)

    def auto_window(self) -> tuple[float, float]:
        """(window, level) spanning the 1st to 99.5th percentile of the volume (on a sample of voxels)."""
        return self.percentile_window(1.0, 99.5)

    def percentile_window(self, lo_pct: float, hi_pct: float, where: np.ndarray | None = None) -> tuple[float, float]:
        """(window, level) spanning two percentiles of the volume, or of the voxels selected by ``where``."""
        flat = self.codes.ravel() if where is None else self.codes[where]
        if flat.size == 0:
            flat = self.codes.ravel()
        sample = flat[:: max(1, flat.size // 200_000)]
        p_lo, p_hi = np.percentile(sample, [lo_pct, hi_pct])
        lo, hi = self.lo + p_lo * self.step, self.lo + p_hi * self.step
        if hi <= lo:
            lo, hi = self.lo, max(self.hi, self.lo + 1.0)
        return hi - lo, (hi + lo) / 2.0


# name: (low percentile, high percentile, of the labelled voxels only)
WINDOW_PRESETS: dict[str, tuple[float, float, bool]] = {
    "Automatic (1–99.5 %)": (1.0, 99.5, False),
    "High contrast (5–95 %)": (5.0, 95.0, False),
    "Full range": (0.0, 100.0, False),
    "Muscle (labelled voxels)": (0.5, 99.5, True),
}


def window_lut(q: Quantized, window: float, level: float) -> np.ndarray:
    """uint8 grey level for each of the 65536 codes under (window, level) in image units."""
    window = max(float(window), 1e-6)
    raw = q.lo + np.arange(N_CODES, dtype=np.float64) * q.step
    g = (raw - (level - window / 2.0)) * (255.0 / window)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


@dataclass
class OverlayStyle:
    """How labels are drawn: colours, visibility per value, the active muscle, opacity, overlay on/off."""

    colours: np.ndarray = field(default_factory=lambda: np.full((256, 3), 255, dtype=np.uint8))
    visible: np.ndarray = field(default_factory=lambda: np.ones(256, dtype=bool))
    strength: np.ndarray = field(default_factory=lambda: np.ones(256, dtype=np.float32))  # per-muscle opacity
    active: int = 0
    opacity: float = 0.5
    show: bool = True

    @classmethod
    def from_segments(cls, segments: Iterable[Segment], **kw: object) -> OverlayStyle:
        """Colours of the given segments; other values white."""
        style = cls(**kw)  # type: ignore[arg-type]
        for s in segments:
            style.colours[s.value] = s.colour
        return style

    def alphas(self) -> np.ndarray:
        """float32 ``(2, 256)``: opacity of fill (row 0) and outline (row 1) per label value.

        The active muscle is filled at the chosen opacity and outlined solid; the others are filled at 60 %
        of it with a lighter outline, so opacity 0 shows outlines only. ``strength`` scales both per muscle.
        """
        a = np.zeros((2, 256), dtype=np.float32)
        if not self.show:
            return a
        op = float(min(max(self.opacity, 0.0), 1.0))
        a[0, :] = 0.6 * op
        a[1, :] = 0.35 + 0.5 * op
        if 0 < self.active < 256:
            a[0, self.active] = op
            a[1, self.active] = 1.0
        a *= np.clip(self.strength, 0.0, 1.0)[None, :]
        a[:, 0] = 0.0
        a[:, ~self.visible] = 0.0
        return a


def composite_lut(style: OverlayStyle) -> np.ndarray:
    """uint32 0xAARRGGBB table of ``2*256*256`` entries indexed by ``(edge << 16) | (label << 8) | grey``."""
    grey = np.arange(256, dtype=np.float32)
    a = style.alphas()[:, :, None, None]  # (2, 256, 1, 1)
    col = style.colours.astype(np.float32)[None, :, None, :]  # (1, 256, 1, 3)
    rgb = (1.0 - a) * grey[None, None, :, None] + a * col  # (2, 256, 256, 3)
    rgb8: np.ndarray = np.clip(np.rint(rgb), 0, 255).astype(np.uint32)
    lut = np.uint32(0xFF000000) | (rgb8[..., 0] << 16) | (rgb8[..., 1] << 8) | rgb8[..., 2]
    return np.ascontiguousarray(lut.reshape(-1))


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels of a muscle with a 4-neighbour of another value (the inner outline of every muscle)."""
    e = np.zeros(labels.shape, dtype=bool)
    d = labels[1:, :] != labels[:-1, :]
    e[1:, :] |= d
    e[:-1, :] |= d
    d = labels[:, 1:] != labels[:, :-1]
    e[:, 1:] |= d
    e[:, :-1] |= d
    e &= labels != 0
    return e


def clip_box(shape: tuple[int, ...], box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """``box`` (y0, y1, x0, x1; None = all) within a slice of ``shape``; None when nothing is left."""
    h, w = shape[0], shape[1]
    y0, y1, x0, x1 = (0, h, 0, w) if box is None else box
    y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    return None if y0 >= y1 or x0 >= x1 else (y0, y1, x0, x1)


def compose_into(
    out: np.ndarray,
    grey: np.ndarray,
    labels: np.ndarray,
    lut: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
) -> None:
    """Write the composed pixels of ``box`` (y0, y1, x0, x1; None = all) into ``out`` (uint32, in place)."""
    h, w = labels.shape
    if (clipped := clip_box(labels.shape, box)) is None:
        return
    y0, y1, x0, x1 = clipped
    ey0, ey1, ex0, ex1 = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
    lab_ext = labels[ey0:ey1, ex0:ex1]
    inner = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
    edge = label_edges(lab_ext)[inner]
    idx = lab_ext[inner].astype(np.uint32) << 8
    idx |= grey[y0:y1, x0:x1]
    idx[edge] |= np.uint32(1 << 16)
    out[y0:y1, x0:x1] = lut[idx]


DIFF_COLOUR = np.uint32(0xFFFFFFFF)  # white, on every other pixel: the labels stay visible between


def mark_differences(
    out: np.ndarray, labels: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int] | None = None
) -> None:
    """Hatch (white checks) the pixels of ``box`` where ``labels`` differ from ``reference``."""
    if (clipped := clip_box(labels.shape, box)) is None:
        return
    y0, y1, x0, x1 = clipped
    diff = labels[y0:y1, x0:x1] != reference[y0:y1, x0:x1]
    if not diff.any():
        return
    yy, xx = np.nonzero(diff)
    even = ((yy + y0 + xx + x0) & 1) == 0
    out[y0:y1, x0:x1][yy[even], xx[even]] = DIFF_COLOUR


def compose(grey: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """A new uint32 ``(y, x)`` buffer of the composed slice."""
    out = np.empty(labels.shape, dtype=np.uint32)
    compose_into(out, grey, labels, lut)
    return out


def qimage_of(buf: np.ndarray):  # -> QImage (Qt imported here, not at module import)
    """A ``QImage`` (Format_RGB32) that shares ``buf``'s memory; keep ``buf`` alive as long as the image."""
    from PyQt5.QtGui import QImage

    if buf.dtype != np.uint32 or buf.ndim != 2 or not buf.flags.c_contiguous:
        raise ValueError("need a C-contiguous uint32 (y, x) buffer")
    h, w = buf.shape
    return QImage(buf.data, w, h, 4 * w, QImage.Format_RGB32)  # type: ignore[call-overload]
