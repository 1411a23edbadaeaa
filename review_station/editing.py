"""The series under review: image, the label volume being corrected and its undo history (no Qt).

Every change to the labels goes through :class:`EditSession`, which records it in the history, so the
canvas, the tool buttons and the tests share one path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np

from review_station import tools
from review_station.history import Edit, History, diff_slice
from review_station.tools import BBox, BrushShape

log = logging.getLogger(__name__)


class EditError(ValueError):
    """An editing operation cannot be done as asked (the message says why, for the operator)."""


class EditSession:
    """Image ``(z, y, x)`` float32 and labels uint8 of one series, with undo/redo of every edit."""

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        *,
        history: History | None = None,
    ) -> None:
        if image.ndim != 3:
            raise ValueError(f"the image must be a (z, y, x) volume, got shape {image.shape}")
        if labels.shape != image.shape:
            raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
        if labels.dtype != np.uint8:
            raise ValueError(f"labels must be uint8, got {labels.dtype}")
        self.image = np.ascontiguousarray(image, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels)
        self.spacing = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
        self.history = history if history is not None else History()
        self._saved = self.labels.copy()
        self.locked = np.zeros(256, dtype=bool)  # muscles whose pixels no edit changes
        self._stroke: dict[str, object] | None = None
        self._stroke_before: np.ndarray | None = None
        self._stroke_z = 0
        self._stroke_radius = 0
        self._stroke_last = (0.0, 0.0)

    # ---- state -----------------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.labels.shape[0])

    @property
    def modified(self) -> bool:
        """Whether the labels differ from the draft as loaded (or as last uploaded)."""
        return not np.array_equal(self.labels, self._saved)

    def mark_saved(self, labels: np.ndarray | None = None) -> None:
        """``labels`` (default: the current labels) are what the node or the file holds now."""
        self._saved = (self.labels if labels is None else labels).copy()

    def _check_z(self, z: int) -> None:
        if not 0 <= z < self.n_slices:
            raise EditError(f"slice {z + 1} is outside 1..{self.n_slices}")

    # ---- brush -----------------------------------------------------------------------------------
    @property
    def stroking(self) -> bool:
        """Whether a brush stroke is under way."""
        return self._stroke is not None

    def begin_stroke(
        self,
        z: int,
        start: tuple[float, float],
        *,
        value: int,
        radius: int = 5,
        shape: BrushShape = "round",
        erase: bool = False,
        erase_all: bool = False,
        intensity_tolerance: float | None = None,
        protect_others: bool = False,
    ) -> BBox | None:
        """Start a stroke on slice ``z`` with a dab at ``start`` (y, x); returns the box it covered.

        ``intensity_tolerance`` turns on the intensity-aware brush: only pixels within ± tolerance of the
        intensity under ``start`` are touched for the whole stroke.
        """
        self._check_z(z)
        if self._stroke is not None:
            self.end_stroke()
        if not erase and value == 0:
            raise EditError("choose a muscle to paint")
        kw: dict[str, object] = {"value": value, "shape": shape, "erase": erase, "erase_all": erase_all}
        kw["protect_others"] = protect_others
        if self.locked.any():
            kw["locked"] = self.locked.copy()
        if intensity_tolerance is not None:
            h, w = self.image.shape[1:]
            y = min(max(round(start[0]), 0), h - 1)
            x = min(max(round(start[1]), 0), w - 1)
            v0 = float(self.image[z, y, x])
            kw["image"] = self.image[z]
            kw["intensity_range"] = (v0 - intensity_tolerance, v0 + intensity_tolerance)
        self._stroke = kw
        self._stroke_radius = int(radius)
        self._stroke_z = z
        self._stroke_before = self.labels[z].copy()
        self._stroke_last = (float(start[0]), float(start[1]))
        return tools.brush(self.labels[z], start, self._stroke_radius, **kw)  # type: ignore[arg-type]

    def stroke_to(self, point: tuple[float, float]) -> BBox | None:
        """Continue the stroke to ``point`` (y, x); returns the box covered by this segment."""
        if self._stroke is None:
            return None
        box = tools.stroke(self.labels[self._stroke_z], self._stroke_last, point, self._stroke_radius, **self._stroke)
        self._stroke_last = (float(point[0]), float(point[1]))
        return box

    def end_stroke(self) -> Edit | None:
        """Finish the stroke and record it (None if it changed nothing)."""
        if self._stroke is None or self._stroke_before is None:
            return None
        erase = bool(self._stroke["erase"])
        what = "erase all" if erase and self._stroke["erase_all"] else "erase" if erase else "paint"
        diff = diff_slice(self._stroke_z, self._stroke_before, self.labels[self._stroke_z])
        self._stroke = None
        self._stroke_before = None
        return self.history.record(f"{what} on slice {self._stroke_z + 1}", [diff])

    def cancel_stroke(self) -> None:
        """Drop the stroke under way and restore the slice."""
        if self._stroke is not None and self._stroke_before is not None:
            self.labels[self._stroke_z] = self._stroke_before
        self._stroke = None
        self._stroke_before = None

    # ---- whole-slice operations ------------------------------------------------------------------
    def set_locked(self, value: int, locked: bool) -> None:
        """Lock (or unlock) a muscle: while locked, no edit changes its pixels."""
        if not 1 <= value <= 255:
            raise ValueError(f"label value {value} is outside 1..255")
        self.locked[value] = locked

    def apply_slices(self, description: str, new: Mapping[int, np.ndarray]) -> Edit | None:
        """Write new contents for some slices and record one undoable step (locked muscles stay as they are)."""
        if self._stroke is not None:
            self.end_stroke()
        diffs = []
        for z, s in sorted(new.items()):
            self._check_z(z)
            if s.shape != self.labels.shape[1:] or s.dtype != np.uint8:
                raise ValueError(f"slice {z + 1}: expected uint8 {self.labels.shape[1:]}, got {s.dtype} {s.shape}")
            if self.locked.any():
                keep = self.locked[self.labels[z]]
                if keep.any():
                    s = s.copy()
                    s[keep] = self.labels[z][keep]
            diffs.append(diff_slice(z, self.labels[z], s))
            self.labels[z] = s
        return self.history.record(description, diffs)

    def replace_labels(self, description: str, labels: np.ndarray) -> Edit | None:
        """Take ``labels`` (a whole volume, e.g. edits kept on disk) as one undoable step."""
        if labels.shape != self.labels.shape or labels.dtype != np.uint8:
            raise EditError(f"labels {labels.dtype} {labels.shape} do not fit this series {self.labels.shape}")
        changed = np.flatnonzero((labels != self.labels).any(axis=(1, 2)))
        return self.apply_slices(description, {int(z): labels[z].copy() for z in changed})

    def _slice_op(self, name: str, z: int | None, fn: Callable[[np.ndarray], np.ndarray]) -> Edit | None:
        zs = range(self.n_slices) if z is None else [z]
        if z is not None:
            self._check_z(z)
        new = {k: fn(self.labels[k]) for k in zs}
        where = "all slices" if z is None else f"slice {z + 1}"
        return self.apply_slices(f"{name} on {where}", new)

    def grow(self, z: int | None, label: int, iterations: int = 1) -> Edit | None:
        """Grow ``label`` on slice ``z`` (or every slice if None) into unlabelled pixels."""
        return self._slice_op("grow", z, lambda s: tools.grow(s, label, iterations))

    def shrink(self, z: int | None, label: int, iterations: int = 1) -> Edit | None:
        """Shrink ``label`` on slice ``z`` (or every slice)."""
        return self._slice_op("shrink", z, lambda s: tools.shrink(s, label, iterations))

    def fill_holes(self, z: int | None, label: int, max_size: int | None = None) -> Edit | None:
        """Fill the holes of ``label`` on slice ``z`` (or every slice)."""
        return self._slice_op("fill holes", z, lambda s: tools.fill_holes(s, label, max_size))

    def remove_small_islands(self, z: int | None, label: int | None, min_size: int) -> Edit | None:
        """Clear pieces of ``label`` (or of every muscle) smaller than ``min_size`` pixels."""
        return self._slice_op("remove islands", z, lambda s: tools.remove_small_islands(s, label, min_size))

    def smooth(self, z: int | None, label: int, sigma: float = 1.0) -> Edit | None:
        """Smooth the outline of ``label`` on slice ``z`` (or every slice)."""
        return self._slice_op("smooth", z, lambda s: tools.smooth(s, label, sigma))

    # ---- across slices ---------------------------------------------------------------------------
    def _sampling(self) -> tuple[float, float]:
        return (self.spacing[1], self.spacing[2])

    def interpolate(self, label: int, z: int, *, block: bool = False) -> Edit | None:
        """Shape-based interpolation of ``label`` from the nearest labelled slices below and above ``z``.

        ``block=False`` redraws slice ``z`` only (Dafne's *Interpolate*); ``block=True`` fills every slice
        of the gap around an unlabelled slice ``z`` (Dafne's *Interpolate block*).
        """
        self._check_z(z)
        if block and (self.labels[z] == label).any():
            raise EditError(f"slice {z + 1} already contains this muscle: go to a slice of the gap to fill")
        try:
            z0, z1 = tools.labelled_neighbours(self.labels, label, z)
            vol = tools.interpolate(
                self.labels, label, z0, z1, slices=None if block else [z], sampling=self._sampling()
            )
        except ValueError as exc:
            raise EditError(str(exc)) from exc
        zs = range(z0 + 1, z1) if block else [z]
        what = f"slices {z0 + 2}-{z1}" if block else f"slice {z + 1}"
        return self.apply_slices(f"interpolate {what}", {k: vol[k] for k in zs})

    def interpolate_between(self, label: int, z0: int, z1: int) -> Edit | None:
        """Interpolate ``label`` on every slice strictly between labelled slices ``z0`` and ``z1``."""
        try:
            vol = tools.interpolate(self.labels, label, z0, z1, sampling=self._sampling())
        except ValueError as exc:
            raise EditError(str(exc)) from exc
        return self.apply_slices(f"interpolate slices {z0 + 2}-{z1}", {k: vol[k] for k in range(z0 + 1, z1)})

    def propagate(
        self,
        z_from: int,
        z_to: int,
        label: int | None,
        method: Literal["affine", "bspline"] = "bspline",
    ) -> Edit | None:
        """Carry ``label`` (or every muscle if None) from slice ``z_from`` to ``z_to`` by registration."""
        self._check_z(z_from)
        self._check_z(z_to)
        try:
            new = tools.propagate(
                self.image, self.labels, z_from, z_to, label=label, spacing=self._sampling(), method=method
            )
        except ValueError as exc:
            raise EditError(str(exc)) from exc
        return self.apply_slices(f"propagate slice {z_from + 1} to {z_to + 1}", {z_to: new})

    # ---- history ---------------------------------------------------------------------------------
    def undo(self) -> Edit | None:
        """Undo the last step (a stroke under way is finished first)."""
        if self._stroke is not None:
            self.end_stroke()
        return self.history.undo(self.labels)

    def redo(self) -> Edit | None:
        """Redo the last undone step."""
        if self._stroke is not None:
            self.end_stroke()
        return self.history.redo(self.labels)
