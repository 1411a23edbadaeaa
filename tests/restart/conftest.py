"""Fixtures of the restart suite: the federation's tiny private reference set (SYNTHETIC phantom)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def restart_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SYNTHETIC PD leg phantom subject, 4 slices: a validation takes well under a second."""
    from models.phantom import cohort, generate

    root = tmp_path_factory.mktemp("restart-reference")
    (root / "leg").mkdir()
    ph = generate(dataclasses.replace(cohort("reference_pd_leg", 1)[0], n_slices=4))
    np.savez(root / "leg" / "ref0.npz", image=ph.image, labels=ph.labels, spacing=np.asarray(ph.spacing))
    return root
