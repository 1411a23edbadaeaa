"""Mask operations of the review station (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.morphology import disk

from review_station import tools


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def circle(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ---- brush -----------------------------------------------------------------------------------------
def test_footprints() -> None:
    assert tools.footprint(0).sum() == 1
    np.testing.assert_array_equal(tools.footprint(4, "round"), disk(4).astype(bool))
    assert tools.footprint(3, "square").all() and tools.footprint(3, "square").shape == (7, 7)
    with pytest.raises(ValueError, match="shape"):
        tools.footprint(2, "star")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        tools.footprint(-1)


def test_brush_paints_footprint_and_returns_box() -> None:
    lab = np.zeros((50, 60), np.uint8)
    box = tools.brush(lab, (20, 30), 4, value=3)
    assert box == (16, 25, 26, 35)
    np.testing.assert_array_equal(lab[16:25, 26:35] == 3, disk(4).astype(bool))
    assert (lab == 3).sum() == disk(4).sum()


def test_brush_clips_at_edges_and_ignores_points_off_the_slice() -> None:
    lab = np.zeros((20, 20), np.uint8)
    assert tools.brush(lab, (0, 0), 3, value=1, shape="square") == (0, 4, 0, 4)
    assert (lab == 1).sum() == 16
    assert tools.brush(lab, (-10, 5), 3, value=1) is None
    assert (lab == 1).sum() == 16


def test_brush_paints_over_other_muscles_unless_protected() -> None:
    lab = np.full((11, 11), 2, np.uint8)
    lab[:, :5] = 0
    tools.brush(lab, (5, 5), 5, value=1, shape="square", protect_others=True)
    assert (lab[:, :5] == 1).all() and (lab[:, 5:] == 2).all()
    tools.brush(lab, (5, 5), 5, value=1, shape="square")
    assert (lab == 1).all()


def test_erase_only_active_or_all() -> None:
    lab = np.zeros((10, 10), np.uint8)
    lab[:, :5], lab[:, 5:] = 1, 2
    tools.brush(lab, (5, 5), 9, value=1, shape="square", erase=True)
    assert not (lab == 1).any() and (lab[:, 5:] == 2).all()
    lab[:, :5] = 1
    tools.brush(lab, (5, 5), 9, value=1, shape="square", erase=True, erase_all=True)
    assert not lab.any()


def test_intensity_aware_brush_touches_only_pixels_in_range() -> None:
    lab = np.zeros((10, 10), np.uint8)
    img = np.zeros((10, 10), np.float32)
    img[:, 5:] = 100.0
    tools.brush(lab, (5, 7), 9, value=4, shape="square", image=img, intensity_range=(90, 110))
    assert (lab[:, 5:] == 4).all() and not lab[:, :5].any()
    with pytest.raises(ValueError, match="image"):
        tools.brush(lab, (5, 7), 2, value=4, intensity_range=(0, 1))


def test_brush_refuses_bad_input() -> None:
    with pytest.raises(TypeError, match="uint8"):
        tools.brush(np.zeros((5, 5), np.int32), (2, 2), 1, value=1)
    with pytest.raises(ValueError, match="muscle value"):
        tools.brush(np.zeros((5, 5), np.uint8), (2, 2), 1, value=0)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        tools.brush(np.zeros((5, 5), np.uint8), (2, 2), 1, value=300)


def test_stroke_leaves_no_gaps() -> None:
    lab = np.zeros((40, 120), np.uint8)
    box = tools.stroke(lab, (20, 10), (20, 100), 2, value=5)
    assert box == (18, 23, 9, 103)  # the dab at ``start`` belongs to the previous segment
    assert (lab[20, 9:103] == 5).all() and lab[20, 8] == 0
    assert (lab[18:23, 11:101] == 5).all()
    lab2 = np.zeros((40, 120), np.uint8)
    tools.stroke(lab2, (5, 5), (35, 110), 6, value=1)  # diagonal, thick
    line = [(round(5 + t * 30), round(5 + t * 105)) for t in np.linspace(0.05, 1, 200)]
    assert all(lab2[y, x] == 1 for y, x in line)


# ---- grow / shrink / holes / islands ---------------------------------------------------------------
def test_grow_into_unlabelled_pixels_only() -> None:
    lab = np.zeros((9, 9), np.uint8)
    lab[4, 4] = 1
    lab[4, 5] = 2
    out = tools.grow(lab, 1)
    assert out[3, 4] == out[5, 4] == out[4, 3] == 1
    assert out[4, 5] == 2, "grew into another muscle"
    assert out[3, 3] == 0, "one step is 4-connected"
    assert lab.sum() == 3, "input changed"
    # diamond of radius 2 (13 px) minus the other muscle's pixel and the one reachable only through it
    assert (tools.grow(lab, 1, iterations=2) == 1).sum() == 11


def test_shrink_erodes_but_not_at_the_slice_edge() -> None:
    lab = np.zeros((12, 12), np.uint8)
    lab[2:9, 2:9] = 3
    out = tools.shrink(lab, 3)
    assert (out == 3).sum() == 25 and (out[3:8, 3:8] == 3).all()
    edge = np.zeros((6, 6), np.uint8)
    edge[:, :3] = 3
    assert (tools.shrink(edge, 3)[:, :2] == 3).all()


def test_fill_holes_keeps_enclosed_other_muscle_and_respects_max_size() -> None:
    lab = np.zeros((30, 30), np.uint8)
    lab[2:28, 2:28] = 1
    lab[5:7, 5:7] = 0  # small hole (4 px)
    lab[10:20, 10:20] = 0  # big hole (100 px)
    lab[14, 14] = 2  # another muscle inside the big hole
    out = tools.fill_holes(lab, 1, max_size=10)
    assert (out[5:7, 5:7] == 1).all() and (out[10:14, 10:20] == 0).all()
    out = tools.fill_holes(lab, 1)
    assert out[14, 14] == 2
    assert ((out[10:20, 10:20] == 1).sum()) == 99


def test_remove_small_islands() -> None:
    lab = np.zeros((20, 20), np.uint8)
    lab[2:10, 2:10] = 1  # 64
    lab[15, 15] = 1  # 1
    lab[17:19, 2:4] = 2  # 4
    out = tools.remove_small_islands(lab, 1, min_size=5)
    assert out[15, 15] == 0 and (out[2:10, 2:10] == 1).all() and (out[17:19, 2:4] == 2).all()
    out = tools.remove_small_islands(lab, None, min_size=5)
    assert not (out == 2).any() and out[15, 15] == 0
    diag = np.zeros((5, 5), np.uint8)
    diag[1, 1] = diag[2, 2] = diag[3, 3] = 1  # 8-connected: one island of 3
    assert (tools.remove_small_islands(diag, 1, 3) == 1).sum() == 3


def test_per_slice_on_volumes() -> None:
    vol = np.zeros((3, 9, 9), np.uint8)
    vol[0, 4, 4] = vol[2, 4, 4] = 1
    out = tools.grow(vol, 1)
    assert (out[0] == 1).sum() == 5 and not out[1].any() and (out[2] == 1).sum() == 5


def test_remove_overlap_active_wins() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    c = np.zeros((4, 4), bool)
    a[:2], b[1:3], c[2:] = True, True, True
    out = tools.remove_overlap({1: a, 2: b, 3: c}, active=2)
    assert (out[0] == 1).all() and (out[1:3] == 2).all() and (out[3] == 3).all()
    out = tools.remove_overlap({1: a, 2: b, 3: c})
    assert (out[1] == 2).all() and (out[2] == 3).all()
    with pytest.raises(ValueError, match="shape"):
        tools.remove_overlap({1: a, 2: np.zeros((3, 3), bool)})
    with pytest.raises(ValueError, match="active"):
        tools.remove_overlap({1: a}, active=5)


# ---- interpolation ---------------------------------------------------------------------------------
def test_signed_distance_signs() -> None:
    m = circle((21, 21), 10, 10, 5)
    d = tools.signed_distance(m)
    assert (d[m] < 0).all() and (d[~m] > 0).all()
    with pytest.raises(ValueError, match="empty"):
        tools.signed_distance(np.zeros((4, 4), bool))


def test_interpolate_between_circles_gives_intermediate_circles() -> None:
    vol = np.zeros((5, 80, 80), np.uint8)
    vol[0][circle((80, 80), 40, 40, 10)] = 7
    vol[4][circle((80, 80), 40, 40, 20)] = 7
    vol[2, 0:5, 0:5] = 3  # another muscle, far away
    vol[2, 38:42, 38:42] = 3  # another muscle inside the interpolated shape
    vol[1, 70, 70] = 7  # stray pixel of the muscle, replaced
    out = tools.interpolate(vol, 7, 0, 4)
    expected = circle((80, 80), 40, 40, 15)
    assert dice(out[2] == 7, expected & (vol[2] != 3)) > 0.95
    assert (out[2, 38:42, 38:42] == 3).all() and (out[2, 0:5, 0:5] == 3).all()
    assert out[1, 70, 70] == 0
    np.testing.assert_array_equal(out[0], vol[0])
    np.testing.assert_array_equal(out[4], vol[4])
    assert abs((out[1] == 7).sum() - np.pi * 12.5**2) / (np.pi * 12.5**2) < 0.08
    # shifted shapes: the blend of distance maps is the ellipse |p-c0| + |p-c1| < r0 + r1 (foci c0, c1)
    moved = np.zeros((3, 80, 80), np.uint8)
    moved[0][circle((80, 80), 40, 30, 10)] = 1
    moved[2][circle((80, 80), 40, 50, 20)] = 1
    yy, xx = np.mgrid[:80, :80]
    ellipse = np.hypot(yy - 40, xx - 30) + np.hypot(yy - 40, xx - 50) < 30
    assert dice(tools.interpolate(moved, 1, 0, 2)[1] == 1, ellipse) > 0.95
    over = tools.interpolate(vol, 7, 0, 4, overwrite_others=True)
    assert (over[2, 38:42, 38:42] == 7).all()
    only = tools.interpolate(vol, 7, 0, 4, slices=[3])
    np.testing.assert_array_equal(only[2], vol[2])
    assert (only[3] == 7).any()


def test_interpolate_refuses_missing_ends() -> None:
    vol = np.zeros((4, 10, 10), np.uint8)
    vol[0, 3:6, 3:6] = 1
    with pytest.raises(ValueError, match="slice 4 does not contain"):
        tools.interpolate(vol, 1, 0, 3)
    with pytest.raises(ValueError, match="z0 < z1"):
        tools.interpolate(vol, 1, 3, 0)


def test_labelled_neighbours() -> None:
    vol = np.zeros((8, 5, 5), np.uint8)
    vol[1, 2, 2] = vol[2, 2, 2] = vol[6, 2, 2] = 4
    assert tools.labelled_neighbours(vol, 4, 4) == (2, 6)
    assert tools.labelled_neighbours(vol, 4, 2) == (1, 6)
    with pytest.raises(ValueError, match="below"):
        tools.labelled_neighbours(vol, 4, 1)
    with pytest.raises(ValueError, match="above"):
        tools.labelled_neighbours(vol, 4, 7)


# ---- propagation -----------------------------------------------------------------------------------
def _textured_pair(shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two slices, the second the first moved by ``shift``; labels on the first; the truth on the second."""
    from scipy import ndimage

    n = 160
    rng = np.random.default_rng(3)
    base = ndimage.gaussian_filter(rng.normal(0, 1, (n, n)), 3) * 40
    lab = np.zeros((n, n), np.uint8)
    lab[circle((n, n), 60, 60, 18)] = 1
    lab[circle((n, n), 100, 95, 14)] = 2
    img0 = base + 100.0 * (lab == 1) + 160.0 * (lab == 2) + 60.0 * circle((n, n), 80, 80, 60)
    img1 = np.roll(img0, shift, axis=(0, 1))
    truth = np.roll(lab, shift, axis=(0, 1))
    image = np.stack([img0, img1]).astype(np.float32)
    labels = np.stack([lab, np.zeros_like(lab)])
    return image, labels, truth


@pytest.mark.parametrize("method", ["affine", "bspline"])
def test_propagate_follows_the_anatomy(method: str) -> None:
    image, labels, truth = _textured_pair((5, -4))
    out = tools.propagate(image, labels, 0, 1, method=method)  # type: ignore[arg-type]
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2}
    for v in (1, 2):
        moved = dice(out == v, truth == v)
        unmoved = dice(labels[0] == v, truth == v)
        assert moved > 0.9 and moved > unmoved + 0.05, (v, moved, unmoved)


def test_propagate_one_muscle_keeps_the_others() -> None:
    image, labels, truth = _textured_pair((3, 3))
    labels[1][truth == 2] = 2  # already labelled on the target
    labels[1, 0:4, 0:4] = 1  # stray piece of muscle 1 on the target: replaced
    out = tools.propagate(image, labels, 0, 1, label=1, method="affine")
    assert (out[truth == 2] == 2).mean() > 0.99
    assert (out[0:4, 0:4] == 0).all()
    assert dice(out == 1, truth == 1) > 0.9


def test_propagate_refuses_nonsense() -> None:
    image, labels, _ = _textured_pair((1, 1))
    with pytest.raises(ValueError, match="different slices"):
        tools.propagate(image, labels, 0, 0)
    with pytest.raises(ValueError, match="nothing to propagate"):
        tools.propagate(image, labels, 1, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        tools.propagate(image[:, :10], labels, 0, 1)
