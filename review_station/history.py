"""Undo/redo of label edits, stored as per-slice diffs (the changed box of a slice), never whole volumes."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceDiff:
    """The changed box of one slice: its contents before and after the edit."""

    z: int
    y0: int
    x0: int
    before: np.ndarray
    after: np.ndarray

    @property
    def nbytes(self) -> int:
        """Memory held by this diff."""
        return int(self.before.nbytes + self.after.nbytes)

    def _box(self) -> tuple[int, slice, slice]:
        h, w = self.before.shape
        return self.z, slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def revert(self, labels: np.ndarray) -> None:
        """Put the ``before`` contents back."""
        labels[self._box()] = self.before

    def apply(self, labels: np.ndarray) -> None:
        """Put the ``after`` contents back."""
        labels[self._box()] = self.after


def diff_slice(z: int, before: np.ndarray, after: np.ndarray) -> SliceDiff | None:
    """The smallest box of ``after`` that differs from ``before`` (None when they are equal)."""
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"need two 2-D slices of one shape, got {before.shape} and {after.shape}")
    changed = before != after
    rows = np.flatnonzero(changed.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(changed[rows[0] : rows[-1] + 1].any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return SliceDiff(z, y0, x0, before[y0:y1, x0:x1].copy(), after[y0:y1, x0:x1].copy())


@dataclass(frozen=True)
class Edit:
    """One undoable step (a brush stroke, a grow, an interpolation...)."""

    description: str
    diffs: tuple[SliceDiff, ...]

    @property
    def slices(self) -> list[int]:
        """Slices this edit touched, ascending."""
        return sorted({d.z for d in self.diffs})

    @property
    def nbytes(self) -> int:
        """Memory held by this edit."""
        return sum(d.nbytes for d in self.diffs)


class History:
    """Bounded undo/redo stacks of :class:`Edit`: ``max_steps`` steps, fewer only past ``max_bytes``.

    The caller changes the labels, then records the diffs; ``undo``/``redo`` write them back into the array.
    A new edit clears the redo stack.
    """

    def __init__(self, max_steps: int = 100, max_bytes: int = 512 * 2**20) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self._undo: deque[Edit] = deque()
        self._redo: list[Edit] = []
        self._bytes = 0

    def record(self, description: str, diffs: Iterable[SliceDiff | None]) -> Edit | None:
        """Push an edit made of the non-empty ``diffs``; returns it (None when nothing changed)."""
        kept = tuple(d for d in diffs if d is not None)
        if not kept:
            return None
        edit = Edit(description, kept)
        self._undo.append(edit)
        self._bytes += edit.nbytes
        self._redo.clear()
        while len(self._undo) > self.max_steps or (self._bytes > self.max_bytes and len(self._undo) > 1):
            dropped = self._undo.popleft()
            self._bytes -= dropped.nbytes
        return edit

    def undo(self, labels: np.ndarray) -> Edit | None:
        """Revert the last edit in ``labels``; returns it (None when there is nothing to undo)."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        self._bytes -= edit.nbytes
        for d in reversed(edit.diffs):
            d.revert(labels)
        self._redo.append(edit)
        return edit

    def redo(self, labels: np.ndarray) -> Edit | None:
        """Re-apply the last undone edit; returns it (None when there is nothing to redo)."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        for d in edit.diffs:
            d.apply(labels)
        self._undo.append(edit)
        self._bytes += edit.nbytes
        return edit

    def clear(self) -> None:
        """Forget every step."""
        self._undo.clear()
        self._redo.clear()
        self._bytes = 0

    @property
    def can_undo(self) -> bool:
        """Whether there is a step to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether there is a step to redo."""
        return bool(self._redo)

    @property
    def undo_text(self) -> str | None:
        """Description of the step ``undo`` would revert."""
        return self._undo[-1].description if self._undo else None

    @property
    def redo_text(self) -> str | None:
        """Description of the step ``redo`` would re-apply."""
        return self._redo[-1].description if self._redo else None

    @property
    def nbytes(self) -> int:
        """Memory held by the undo stack."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._undo)
