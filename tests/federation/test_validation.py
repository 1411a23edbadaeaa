"""The private reference set: SYNTHETIC phantoms by default, plain arrays only, a fingerprint per content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federation.server.validation import ValidationDataError, ValidationSet
from tests.federation.payloads import WritesMarker


def test_default_phantom_cases_are_written_once_and_read_back(tmp_path: Path) -> None:
    vs = ValidationSet(tmp_path / "leg", "leg")
    assert vs.ensure_default("leg", subjects=2, slices=2, matrix=128, contrasts=("pd", "t1")) == 2
    assert vs.ensure_default("leg", subjects=2, slices=2, matrix=128) == 0  # never overwrites
    cases = vs.cases()
    assert [c.name.split("_")[2] for c in cases] == ["pd", "t1"]
    for case in cases:
        assert case.image.shape == case.labels.shape == (2, 128, 128)
        assert case.labels.dtype == np.uint8 and case.labels.max() > 0
        assert all(s > 0 for s in case.spacing)
    before = vs.fingerprint
    np.savez(
        tmp_path / "leg" / "extra.npz",
        image=cases[0].image,
        labels=cases[0].labels,
        spacing=np.asarray(cases[0].spacing),
    )
    assert ValidationSet(tmp_path / "leg", "leg").fingerprint != before


def test_malformed_or_pickled_reference_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "leg"
    folder.mkdir()
    with pytest.raises(ValidationDataError, match="no reference cases"):
        ValidationSet(folder, "leg").cases()
    np.savez(folder / "a.npz", image=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValidationDataError, match="needs arrays image, labels, spacing"):
        ValidationSet(folder, "leg").cases()
    (folder / "a.npz").unlink()
    marker = tmp_path / "marker"
    np.savez(
        folder / "b.npz",
        image=np.array([WritesMarker(marker)], dtype=object),
        labels=np.zeros((2, 8, 8), np.uint8),
        spacing=np.ones(3),
    )
    with pytest.raises(ValidationDataError):
        ValidationSet(folder, "leg").cases()
    assert not marker.exists()
