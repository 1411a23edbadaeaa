"""Dice per label and the voxel-weighted overall Dice of the Dafne paper."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import dice


def test_identical_and_disjoint() -> None:
    a = np.zeros((2, 10, 10), np.uint8)
    a[0, :5, :5] = 1
    a[1, 5:, 5:] = 2
    same = dice(a, a, {1: "one", 2: "two"})
    assert same == {"one": 1.0, "two": 1.0, "mean": 1.0, "overall": 1.0}
    b = np.zeros_like(a)
    b[0, 5:, 5:] = 1
    b[1, :5, :5] = 2
    assert dice(b, a)["overall"] == 0.0


def test_overall_is_weighted_by_reference_voxels_per_slice() -> None:
    ref = np.zeros((2, 20, 20), np.uint8)
    ref[0, :10, :10] = 1  # 100 voxels
    ref[1, :2, :5] = 2  # 10 voxels
    auto = ref.copy()
    auto[0, :10, :5] = 0  # label 1: 50 of 100 found → 2·50/150
    auto[1, :2, :5] = 0  # label 2: missed → 0
    d1 = 2 * 50 / 150
    got = dice(auto, ref, [1, 2])
    assert got["1"] == pytest.approx(d1)
    assert got["2"] == 0.0
    assert got["mean"] == pytest.approx(d1 / 2)
    assert got["overall"] == pytest.approx((d1 * 100 + 0 * 10) / 110)


def test_labels_absent_from_both_are_left_out_and_shapes_must_match() -> None:
    a = np.zeros((1, 4, 4), np.uint8)
    a[0, 0, 0] = 3
    got = dice(a, a, {1: "x", 3: "z"})
    assert set(got) == {"z", "mean", "overall"}
    assert np.isnan(dice(np.zeros((3, 3)), np.zeros((3, 3)))["overall"])
    with pytest.raises(ValueError, match="shape"):
        dice(a, a[:, :2])
