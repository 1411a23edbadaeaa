"""Undo/redo as per-slice diffs, and the edit session that records every change (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from review_station.editing import EditError, EditSession
from review_station.history import History, diff_slice


# ---- history ---------------------------------------------------------------------------------------
def test_diff_slice_keeps_only_the_changed_box() -> None:
    before = np.zeros((512, 512), np.uint8)
    after = before.copy()
    after[100:103, 200:203] = 4
    d = diff_slice(7, before, after)
    assert d is not None
    assert (d.z, d.y0, d.x0, d.before.shape) == (7, 100, 200, (3, 3))
    assert d.nbytes == 18, "a diff must not hold the whole slice"
    assert diff_slice(0, before, before.copy()) is None
    with pytest.raises(ValueError, match="2-D"):
        diff_slice(0, before, after[:10])


def test_thirty_random_edits_undo_and_redo_exactly() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (4, 64, 64)).astype(np.uint8)
    states = [labels.copy()]
    h = History(max_steps=30)
    for i in range(30):
        z = int(rng.integers(0, 4))
        y, x = (int(v) for v in rng.integers(0, 56, 2))
        before = labels[z].copy()
        labels[z, y : y + 8, x : x + 8] = rng.integers(0, 13)
        labels[z, y, x] = (int(before[y, x]) + 1) % 13  # never a no-op
        assert h.record(f"edit {i}", [diff_slice(z, before, labels[z])]) is not None
        states.append(labels.copy())
    assert len(h) == 30
    for k in range(30, 0, -1):
        edit = h.undo(labels)
        assert edit is not None and edit.description == f"edit {k - 1}"
        np.testing.assert_array_equal(labels, states[k - 1])
    assert h.undo(labels) is None and not h.can_undo
    for k in range(1, 31):
        assert h.redo(labels) is not None
        np.testing.assert_array_equal(labels, states[k])
    assert h.redo(labels) is None


def test_bounds_and_redo_cleared_by_a_new_edit() -> None:
    labels = np.zeros((1, 8, 8), np.uint8)
    h = History(max_steps=20)

    def edit(v: int) -> None:
        before = labels[0].copy()
        labels[0, 0, 0] = v
        h.record(f"set {v}", [diff_slice(0, before, labels[0])])

    for v in range(1, 26):
        edit(v)
    assert len(h) == 20
    for _ in range(20):
        h.undo(labels)
    assert labels[0, 0, 0] == 5, "the 5 oldest steps were dropped, the 20 newest kept"
    h.redo(labels)
    edit(99)
    assert not h.can_redo and h.undo_text == "set 99"
    small = History(max_steps=100, max_bytes=10)
    for v in range(1, 5):
        before = labels[0].copy()
        labels[0, :2, :2] = v + 100
        small.record("x", [diff_slice(0, before, labels[0])])
    assert len(small) == 1 and small.nbytes == 8
    assert h.record("nothing", [None]) is None


def test_multi_slice_edit_undoes_as_one_step() -> None:
    labels = np.zeros((3, 5, 5), np.uint8)
    h = History()
    diffs = []
    for z in range(3):
        before = labels[z].copy()
        labels[z, z, z] = 9
        diffs.append(diff_slice(z, before, labels[z]))
    edit = h.record("three", diffs)
    assert edit is not None and edit.slices == [0, 1, 2]
    h.undo(labels)
    assert not labels.any()


# ---- edit session ----------------------------------------------------------------------------------
def test_stroke_is_one_undoable_step(series) -> None:
    image, labels, _ = series
    s = EditSession(image, labels.copy(), (5.0, 1.0, 1.0))
    assert not s.modified
    s.begin_stroke(2, (10, 10), value=3, radius=2)
    s.stroke_to((10, 30))
    s.stroke_to((30, 30))
    edit = s.end_stroke()
    assert edit is not None and edit.slices == [2] and edit.description == "paint on slice 3"
    assert (s.labels[2, 10, 10:31] == 3).all() and (s.labels[2, 10:31, 30] == 3).all()
    assert s.modified
    s.undo()
    np.testing.assert_array_equal(s.labels, labels)
    assert not s.modified
    s.redo()
    assert s.labels[2, 20, 30] == 3
    s.mark_saved()
    assert not s.modified


def test_erase_and_cancel(series) -> None:
    image, labels, _ = series
    s = EditSession(image, labels.copy())
    z = 1
    y, x = np.argwhere(labels[z] == 4)[0]
    s.begin_stroke(z, (y, x), value=4, radius=3, erase=True)
    assert s.labels[z, y, x] == 0
    s.cancel_stroke()
    np.testing.assert_array_equal(s.labels, labels)
    assert not s.history.can_undo
    s.begin_stroke(z, (48, 48), value=1, radius=48, shape="square", erase=True, erase_all=True)
    assert s.end_stroke() is not None and not s.labels[z].any()
    with pytest.raises(EditError, match="muscle"):
        s.begin_stroke(0, (5, 5), value=0)


def test_intensity_aware_stroke_uses_the_start_intensity(series) -> None:
    image, labels, _ = series
    img = image.copy()
    img[0] = 0.0
    img[0, :, 50:] = 100.0
    s = EditSession(img, np.zeros_like(labels))
    s.begin_stroke(0, (40, 60), value=2, radius=30, shape="square", intensity_tolerance=5.0)
    s.stroke_to((40, 40))
    s.end_stroke()
    painted = s.labels[0] == 2
    assert painted[:, 50:].any() and not painted[:, :50].any()


def test_slice_operations_record_history(series) -> None:
    image, labels, _ = series
    s = EditSession(image, labels.copy())
    n0 = (s.labels[3] == 2).sum()
    edit = s.grow(3, 2)
    assert edit is not None and edit.slices == [3] and (s.labels[3] == 2).sum() > n0
    s.shrink(3, 2, iterations=2)
    assert (s.labels[3] == 2).sum() < n0
    edit = s.grow(None, 5)
    assert edit is not None and edit.slices == list(range(6))
    s.labels[4, 40:60, 40:60] = 0  # not through the session: not undoable, but the session must cope
    s.labels[4, 50, 50] = 9
    assert s.remove_small_islands(4, 9, 2) is not None and s.labels[4, 50, 50] == 0
    for _ in range(4):
        s.undo()
    assert (s.labels[3] == 2).sum() == n0
    assert s.fill_holes(0, 1) is None, "no hole, no step"


def test_interpolate_through_the_session(series) -> None:
    image, labels, _ = series
    lab = labels.copy()
    lab[1:4][lab[1:4] == 6] = 0  # muscle 6 missing on slices 2-4
    s = EditSession(image, lab)
    with pytest.raises(EditError, match="already contains"):
        s.interpolate(6, 0, block=True)
    edit = s.interpolate(6, 2, block=True)
    assert edit is not None and edit.slices == [1, 2, 3]
    truth = labels == 6
    got = s.labels == 6
    for z in (1, 2, 3):
        assert 2 * (truth[z] & got[z]).sum() / (truth[z].sum() + got[z].sum()) > 0.85
    s.undo()
    edit = s.interpolate(6, 2)
    assert edit is not None and edit.slices == [2]
    with pytest.raises(EditError, match="below"):
        s.interpolate(6, 0)
    assert s.interpolate_between(6, 0, 4) is not None


def test_propagate_through_the_session(series) -> None:
    image, labels, _ = series
    lab = labels.copy()
    lab[3] = 0
    s = EditSession(image, lab)
    edit = s.propagate(2, 3, label=None, method="affine")
    assert edit is not None and edit.slices == [3]
    truth, got = labels[3] > 0, s.labels[3] > 0
    assert 2 * (truth & got).sum() / (truth.sum() + got.sum()) > 0.9
    with pytest.raises(EditError, match="outside"):
        s.propagate(5, 6, label=1)


def test_session_refuses_mismatched_arrays(series) -> None:
    image, labels, _ = series
    with pytest.raises(ValueError, match="differ in shape"):
        EditSession(image, labels[:, :10])
    with pytest.raises(ValueError, match="uint8"):
        EditSession(image, labels.astype(np.int16))
    s = EditSession(image, labels.copy())
    with pytest.raises(ValueError, match="uint8"):
        s.apply_slices("x", {0: labels[0].astype(np.int64)})
