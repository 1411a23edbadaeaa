"""The catalogue's colours (what the SEG's RecommendedDisplayCIELabValue and the station show) tell every
two muscles of a limb apart: CIEDE2000 ≥ 15 between every pair."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from models.labels import region_labels


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_every_two_muscles_of_a_limb_differ_by_at_least_15(region: str) -> None:
    muscles = {label.muscle.key: label.muscle.colour for label in region_labels(region)}
    lab = {key: rgb2lab(np.asarray(rgb, dtype=float).reshape(1, 1, 3) / 255.0)[0, 0] for key, rgb in muscles.items()}
    worst = min((float(deltaE_ciede2000(lab[a], lab[b])), a, b) for a, b in itertools.combinations(sorted(muscles), 2))
    assert worst[0] >= 15.0, worst
