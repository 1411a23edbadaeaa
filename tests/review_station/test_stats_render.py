"""Per-muscle statistics and CSV, and the lookup-table compositing of the canvas (numpy only)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from review_station import render, stats
from review_station.domain import Segment


# ---- statistics ------------------------------------------------------------------------------------
def test_statistics_of_known_voxels() -> None:
    image = np.zeros((2, 4, 4), np.float32)
    labels = np.zeros((2, 4, 4), np.uint8)
    image[0, 0, :] = [1, 2, 3, 4]
    image[1, 0, :] = [5, 6, 7, 8]
    labels[:, 0, :] = 1  # 8 voxels, values 1..8, on 2 slices
    labels[1, 3, 3] = 9  # not in the catalogue
    segs = [Segment(1, "soleus_right", "Soleus (right)", (255, 0, 0)), Segment(2, "x", "Empty", (0, 0, 255))]
    rows = stats.muscle_statistics(image, labels, (5.0, 0.5, 0.5), segs)
    assert [r.value for r in rows] == [1, 2, 9]
    r = rows[0]
    assert (r.slices, r.voxels) == (2, 8)
    assert r.volume_ml == pytest.approx(8 * 1.25 / 1000)
    assert r.mean == pytest.approx(4.5) and r.std == pytest.approx(np.std(np.arange(1, 9)))
    assert (r.p0, r.p25, r.p50, r.p75, r.p100) == pytest.approx((1, 2.75, 4.5, 6.25, 8))
    assert rows[1].voxels == 0 and math.isnan(rows[1].mean)
    assert rows[2].key == "label_9" and rows[2].voxels == 1


def test_csv_export_round_trip(tmp_path: Path) -> None:
    image = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    labels = (image % 3 == 0).astype(np.uint8)
    rows = stats.muscle_statistics(
        image, labels, (1, 1, 1), [Segment(1, "a", "A", (1, 2, 3)), Segment(2, "b", "B", (0, 0, 0))]
    )
    out = tmp_path / "stats.csv"
    stats.write_csv(rows, out)
    assert not (tmp_path / "stats.csv.part").exists()
    table = list(csv.DictReader(out.open()))
    assert tuple(table[0]) == stats.CSV_COLUMNS
    assert table[0]["key"] == "a" and int(table[0]["voxels"]) == int(labels.sum())
    assert float(table[0]["mean"]) == pytest.approx(float(image[labels == 1].mean()))
    assert table[1]["mean"] == "" and table[1]["voxels"] == "0"
    buf = io.StringIO()
    stats.write_csv(rows, buf)
    assert buf.getvalue().splitlines()[0].startswith("value,key,name,slices,voxels,volume_ml")


def test_statistics_refuse_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        stats.muscle_statistics(np.zeros((1, 2, 2)), np.zeros((1, 3, 3), np.uint8), (1, 1, 1), [])


# ---- window / level --------------------------------------------------------------------------------
def test_window_lut_maps_the_window_onto_0_255() -> None:
    image = np.linspace(0, 1000, 4000, dtype=np.float32).reshape(1, 40, 100)
    q = render.Quantized(image)
    lut = render.window_lut(q, 200.0, 500.0)
    grey = lut[q.codes[0]]
    flat, vals = grey.ravel(), image.ravel()
    assert (flat[vals <= 400] == 0).all() and (flat[vals >= 600] == 255).all()
    mid = np.argmin(abs(vals - 500))
    assert abs(int(flat[mid]) - 128) <= 1
    assert (np.diff(flat.astype(int)) >= 0).all()
    w, level = q.auto_window()
    assert 900 < w <= 1000 and 450 < level < 550


def test_quantized_handles_constant_and_nan_images() -> None:
    q = render.Quantized(np.full((1, 3, 3), 7.0, np.float32))
    assert q.codes.max() == 0 and q.auto_window()[0] > 0
    img = np.ones((1, 3, 3), np.float32)
    img[0, 0, 0] = np.nan
    assert render.Quantized(img).codes.dtype == np.uint16


# ---- compositing -----------------------------------------------------------------------------------
def _rgb(v: int) -> tuple[int, int, int]:
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def test_composite_blends_colour_over_grey() -> None:
    style = render.OverlayStyle.from_segments([Segment(1, "a", "A", (255, 0, 0)), Segment(2, "b", "B", (0, 0, 255))])
    style.active, style.opacity = 1, 0.5
    grey = np.full((5, 5), 100, np.uint8)
    labels = np.zeros((5, 5), np.uint8)
    labels[1:4, 1:4] = 1
    labels[0, 4] = 2
    out = render.compose(grey, labels, render.composite_lut(style))
    assert _rgb(int(out[0, 0])) == (100, 100, 100) and (int(out[0, 0]) >> 24) == 255
    assert _rgb(int(out[2, 2])) == (178, 50, 50)  # interior of the active muscle: 50 % red
    assert _rgb(int(out[1, 1])) == (255, 0, 0)  # outline of the active muscle: solid
    r, _, b = _rgb(int(out[0, 4]))  # a one-pixel other muscle is all outline: lighter than solid
    assert b > 100 and r < 100
    style.visible[1] = False
    out2 = render.compose(grey, labels, render.composite_lut(style))
    assert _rgb(int(out2[2, 2])) == (100, 100, 100)
    style.show = False
    out3 = render.compose(grey, labels, render.composite_lut(style))
    assert all(_rgb(int(v)) == (100, 100, 100) for v in out3.ravel())


def test_other_muscles_are_dimmer_than_the_active_one() -> None:
    style = render.OverlayStyle.from_segments([Segment(1, "a", "A", (255, 0, 0)), Segment(2, "b", "B", (255, 0, 0))])
    style.active = 1
    a = style.alphas()
    assert a[0, 1] > a[0, 2] > 0 and a[1, 1] == 1.0 and a[0, 0] == a[1, 0] == 0
    style.opacity = 0.0
    a = style.alphas()
    assert a[0, 1] == a[0, 2] == 0 and a[1, 2] > 0, "opacity 0 leaves outlines"


def test_compose_into_a_box_changes_only_that_box() -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    labels = rng.integers(0, 4, (64, 64)).astype(np.uint8)
    lut = render.composite_lut(render.OverlayStyle(active=2))
    out = render.compose(grey, labels, lut)
    labels2 = labels.copy()
    labels2[20:30, 20:30] = 3
    boxed = out.copy()
    render.compose_into(boxed, grey, labels2, lut, (19, 31, 19, 31))  # the box plus the 1-px outline ring
    full = render.compose(grey, labels2, lut)
    np.testing.assert_array_equal(boxed, full)
    outside = np.ones((64, 64), bool)
    outside[19:31, 19:31] = False
    np.testing.assert_array_equal(boxed[outside], out[outside])


def test_label_edges_are_inner_outlines() -> None:
    lab = np.zeros((6, 6), np.uint8)
    lab[1:5, 1:5] = 1
    e = render.label_edges(lab)
    assert e[1, 1] and e[1, 3] and not e[2, 2] and not e[0, 0]
