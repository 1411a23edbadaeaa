"""Preprocessing: limb split and mirroring, resampling to the model's grid and the exact way back."""

from __future__ import annotations

import numpy as np
import pytest

from models import preprocessing as pp
from models.metrics import dice
from tests.helpers_models import SPACING, synthetic_limbs

SPEC = {"spacing": [1.0, 1.0], "patch": [96, 96]}


def _one_hot(classes: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n + 1, dtype=np.float32)[classes]


def test_limbs_are_found_split_between_them() -> None:
    vol, _ = synthetic_limbs(size=160, gap=20)
    (r_side, r0, r1), (l_side, l0, l1) = pp.find_limbs(vol)
    assert (r_side, l_side) == ("right", "left")
    assert r0 == 0 and l1 == 160 and r1 == l0
    assert 70 <= r1 <= 90  # inside the gap between the discs


def test_touching_limbs_are_split_at_the_valley() -> None:
    vol, _ = synthetic_limbs(size=160, gap=-6)  # the discs overlap a little
    limbs = pp.find_limbs(vol)
    assert [s for s, _, _ in limbs] == ["right", "left"]
    assert 72 <= limbs[0][2] <= 88


def test_single_limbs_and_forced_choices() -> None:
    right, _ = synthetic_limbs(limbs="right")
    left, _ = synthetic_limbs(limbs="left")
    assert pp.find_limbs(right) == [("right", 0, 160)]
    assert pp.find_limbs(left) == [("left", 0, 160)]
    assert pp.find_limbs(left, "right") == [("right", 0, 160)]
    both, _ = synthetic_limbs()
    assert [s for s, _, _ in pp.find_limbs(both, "both")] == ["right", "left"]
    with pytest.raises(ValueError, match="limbs"):
        pp.find_limbs(both, "middle")


def test_identity_grid_maps_labels_back_exactly() -> None:
    vol, lab = synthetic_limbs(n_slices=3)
    prepared = pp.preprocess(vol, SPACING, SPEC)
    classes = pp.labels_to_patches(lab, prepared, 6)
    assert classes.shape == (6, 96, 96) and classes.max() == 6
    back = pp.postprocess(_one_hot(classes, 6), prepared, 6)
    np.testing.assert_array_equal(back, lab)


def test_resampled_grid_maps_back_to_the_input_geometry() -> None:
    vol, lab = synthetic_limbs(n_slices=2, size=200)
    spec = {"spacing": [1.6, 1.6], "patch": [64, 64]}
    prepared = pp.preprocess(vol, (5.0, 0.8, 0.8), spec)
    assert prepared.patches.shape == (4, 64, 64, 1) and prepared.patches.dtype == np.float32
    back = pp.postprocess(_one_hot(pp.labels_to_patches(lab, prepared, 6), 6), prepared, 6)
    assert back.shape == lab.shape
    assert dice(back, lab)["overall"] > 0.93


def test_left_limb_is_mirrored_to_look_like_a_right_limb() -> None:
    vol, lab = synthetic_limbs(n_slices=1, seed=2)
    prepared = pp.preprocess(vol, SPACING, SPEC)
    classes = pp.labels_to_patches(lab, prepared, 6)
    right, left = classes[0], classes[1]
    assert np.mean(right == left) > 0.97  # same wedge layout after mirroring
    assert [limb.mirror for limb in prepared.limbs] == [False, True]


def test_normalisation_is_robust_to_outliers() -> None:
    vol, _ = synthetic_limbs(n_slices=2)
    spiked = vol.copy()
    spiked[0, 80, 40] = 1e6
    a = pp.preprocess(vol, SPACING, SPEC).patches
    b = pp.preprocess(spiked, SPACING, SPEC).patches
    assert abs(float(np.median(a[a > 0.05])) - float(np.median(b[b > 0.05]))) < 0.02
    assert float(b.min()) >= 0.0 and float(b.max()) <= 3.0
    scaled = pp.preprocess(vol * 7.0, SPACING, SPEC).patches
    np.testing.assert_allclose(scaled, a, atol=1e-4)


def test_bad_input_is_refused() -> None:
    vol, lab = synthetic_limbs(n_slices=2)
    with pytest.raises(ValueError, match="z, y, x"):
        pp.preprocess(vol[0], SPACING, SPEC)
    with pytest.raises(ValueError, match="spacing"):
        pp.preprocess(vol, (0.0, 1.0, 1.0), SPEC)
    bad = vol.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pp.preprocess(bad, SPACING, SPEC)
    prepared = pp.preprocess(vol, SPACING, SPEC)
    with pytest.raises(ValueError, match="shape"):
        pp.labels_to_patches(lab[:1], prepared, 6)
    with pytest.raises(ValueError, match="label values"):
        pp.labels_to_patches(lab + 20, prepared, 6)
    with pytest.raises(ValueError, match="spacing"):
        pp.InputSpec(spacing=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown input spec"):
        pp.InputSpec.from_dict({"spacing": [1, 1], "zoom": 2})


def test_input_spec_round_trips() -> None:
    spec = pp.InputSpec(spacing=(1.25, 1.25), patch=(128, 128), bias_field=True)
    assert pp.InputSpec.from_dict(spec.to_dict()) == spec


def test_bias_field_correction_flattens_a_smooth_field() -> None:
    vol, _ = synthetic_limbs(n_slices=4, size=128)
    yy, xx = np.mgrid[:128, :128]
    field = 0.7 + 0.6 * np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / (2 * 60**2))
    biased = vol * field[None].astype(np.float32)
    fat = vol > 700  # the subcutaneous ring: one tissue, one intensity

    def cv(img: np.ndarray) -> float:
        return float(img[fat].std() / img[fat].mean())

    corrected = pp.bias_field_correct(biased, SPACING)
    assert cv(corrected) < 0.5 * cv(biased)
    assert corrected.shape == vol.shape and corrected.dtype == np.float32
