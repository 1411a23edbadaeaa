"""Fixtures of the review station tests: Qt offscreen, a synthetic two-limb series with 12 muscles, the real node."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt creates the QApplication

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from review_station.domain import Segment, default_segments

Series = tuple[np.ndarray, np.ndarray, list[Segment]]


def make_series(n_slices: int = 6, size: int = 96, seed: int = 0) -> Series:
    """Image float32 and labels uint8 (z, y, x): two limbs, six elliptical muscles each, drifting in z."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = np.empty((n_slices, size, size), np.float32)
    labels = np.zeros((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        img = rng.normal(40.0, 4.0, (size, size)).astype(np.float32)
        for side, cx in enumerate((0.29 * size, 0.71 * size)):
            limb = ((yy - size / 2) / (0.4 * size)) ** 2 + ((xx - cx) / (0.21 * size)) ** 2 < 1
            img[limb] += 150.0
            for i in range(6):
                ang = i * np.pi / 3 + 0.03 * z
                my, mx = size / 2 + 0.2 * size * np.sin(ang), cx + 0.1 * size * np.cos(ang)
                ry, rx = 0.085 * size * (1 + 0.02 * z), 0.055 * size
                m = ((yy - my) / ry) ** 2 + ((xx - mx) / rx) ** 2 < 1
                labels[z][m & limb] = 1 + i + 6 * side
                img[m & limb] += 40.0 + 8 * i
        image[z] = img
    return image, labels, default_segments(list(range(1, 13)))


@pytest.fixture(autouse=True)
def _recovery_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Corrections kept after an error go to the test's folder, never to the user's data folder."""
    folder = tmp_path / "recovery"
    monkeypatch.setattr("review_station.recovery.default_folder", lambda: folder)
    return folder


@pytest.fixture
def node(request):
    """The in-process node of ``tests/workflow_fixtures.py::node_api`` (two phantom studies pending review)."""
    try:
        return request.getfixturevalue("node_api")
    except pytest.FixtureLookupError:
        pytest.skip("the in-process node fixture tests/workflow_fixtures.py::node_api is not there yet")


@pytest.fixture
def series() -> Series:
    """A small synthetic series (6 × 96²)."""
    return make_series()


@pytest.fixture
def series_factory() -> Callable[..., Series]:
    """``make_series`` for tests that need another size."""
    return make_series
