"""A real, small incremental-learning run: the PD-pretrained leg model learns T1 from corrected T1
phantoms and gets better on OTHER T1 phantoms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.metrics import dice
from models.package import ModelPackage
from models.phantom import cohort, generate
from models.zoo import load_default


@pytest.mark.slow
def test_learning_on_t1_phantoms_raises_dice_on_other_t1_phantoms() -> None:
    pkg = load_default("leg")
    corrected = generate(dataclasses.replace(cohort("learning_a_t1_leg", 1)[0], n_slices=20))
    # the same scanner as the correction (the learning cohorts' site_b profile), other subjects
    held_out = [generate(dataclasses.replace(s, n_slices=12)) for s in cohort("learning_b_t1_leg", 2)]
    names = pkg.label_names()

    def score(model: ModelPackage) -> float:
        return float(np.mean([dice(model.apply(p.image, p.spacing), p.labels, names)["overall"] for p in held_out]))

    before = score(pkg)
    learned = pkg.learn(corrected.image, corrected.labels, corrected.spacing)  # one approved correction
    after = score(learned)
    assert learned.version == pkg.version + 1 and learned.parent_version == pkg.version
    assert after > before + 0.02, f"Dice on held-out T1 went {before:.3f} → {after:.3f}"
