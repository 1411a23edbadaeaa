"""The site_b scanner profile: another scanner and realistic muscle over the same anatomy and labels."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from models.phantom import Phantom, PhantomSpec, cohort, generate
from models.phantom.anatomy import FAT, MUSCLE


@cache
def pair(seed: int = 21) -> tuple[Phantom, Phantom]:
    spec = PhantomSpec("leg", "t1", seed, n_slices=6, matrix=320)
    return generate(spec), generate(dataclasses.replace(spec, scanner="site_b"))


def _fascia_contrast(ph: Phantom) -> float:
    """Mean signal on muscle-muscle borders over the mean inside muscle (1 = fascia invisible)."""
    lab = ph.labels
    border = np.zeros(lab.shape, bool)
    border[:, 1:, :] |= (lab[:, 1:, :] != lab[:, :-1, :]) & (lab[:, 1:, :] > 0) & (lab[:, :-1, :] > 0)
    border[:, :, 1:] |= (lab[:, :, 1:] != lab[:, :, :-1]) & (lab[:, :, 1:] > 0) & (lab[:, :, :-1] > 0)
    plane = ndimage.generate_binary_structure(2, 1)[None]  # in-plane only
    inner = ndimage.binary_erosion(lab > 0, plane, iterations=3)
    core = inner & ~ndimage.binary_dilation(border, plane, iterations=2)
    return float(ph.image[border].mean() / ph.image[core].mean())


def test_same_anatomy_and_labels_another_look() -> None:
    default, site_b = pair()
    # the same subject: the same muscles in the same places (borders differ a little: the wavy fascia planes
    # are drawn on the finer through-slice sampling)
    agree = np.count_nonzero((site_b.labels == default.labels) & (default.labels > 0))
    assert agree / np.count_nonzero(default.labels) > 0.9
    assert set(np.unique(site_b.labels)) == set(np.unique(default.labels))
    assert site_b.image.shape == default.image.shape and not np.array_equal(site_b.image, default.image)
    assert site_b.acquisition["ReceiveCoilName"] == "SYNTH_FLEX_4CH" and site_b.acquisition["scanner"] == "site_b"
    # fascia barely visible, noisier image
    assert _fascia_contrast(default) > 1.15 > _fascia_contrast(site_b)
    assert site_b.acquisition["noise_sigma"] > default.acquisition["noise_sigma"]
    # fat inside muscle: streaks and infiltration make more muscle voxels look fatty, fat stays brighter
    fatty = []
    for ph in (default, site_b):
        assert ph.tissue is not None
        muscle, fat = ph.image[ph.tissue == MUSCLE], ph.image[ph.tissue == FAT]
        fatty.append(float(np.mean(muscle > 0.5 * (np.median(muscle) + np.median(fat)))))
        assert np.median(fat) > 1.8 * np.median(muscle)
    assert fatty[1] > 2 * fatty[0] and fatty[1] > 0.02, fatty


def test_deterministic_and_default_keys_unchanged() -> None:
    spec = PhantomSpec("leg", "t1", 5, n_slices=2, matrix=256, scanner="site_b")
    np.testing.assert_array_equal(generate(spec).image, generate(spec).image)
    plain = dataclasses.replace(spec, scanner=None)
    assert spec.key() == (*plain.key(), "site_b") and len(plain.key()) == 10
    assert "site_b scanner" in spec.describe()
    with pytest.raises(ValueError, match=r"unknown scanner profile 'mri9'.*site_b"):
        PhantomSpec("leg", "t1", 5, scanner="mri9")


def test_the_learning_cohorts_use_the_profile_and_others_do_not() -> None:
    assert {s.scanner for s in cohort("learning_a_t1_leg")} == {"site_b"}
    assert {s.scanner for s in cohort("learning_b_t1_leg")} == {"site_b"}
    assert {s.scanner for s in cohort("validation_t1_leg")} == {None}
