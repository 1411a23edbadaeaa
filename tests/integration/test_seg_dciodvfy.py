"""dciodvfy (dicom3tools) finds no errors in the draft and approved SEGs the node writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dicom_node.dicom.seg import build_seg, seg_to_bytes
from dicom_node.dicom.volume import InPlaneTransform, SeriesVolume, load_datasets
from tests.unit.test_volume import make_series, random_stored, shuffled, to_multiframe

pytestmark = pytest.mark.peers

DCIODVFY = shutil.which("dciodvfy")


def _dciodvfy(path: Path) -> list[str]:
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120, check=False)
    return (proc.stdout + proc.stderr).splitlines()


def _labels(vol: SeriesVolume) -> np.ndarray:
    labels = np.zeros(vol.shape, dtype=np.uint8)
    labels[1:5, 4:20, 4:18] = 1
    labels[2:6, 24:40, 20:36] = 8
    labels[3, 45:50, 2:6] = 12
    return labels


def _volumes() -> dict[str, SeriesVolume]:
    classic = make_series(random_stored((7, 56, 48), seed=1), transform=InPlaneTransform(flip_cols=True))
    multi = to_multiframe(shuffled(make_series(random_stored((6, 48, 40), seed=2)), seed=3))
    return {"classic": load_datasets(shuffled(classic)), "multiframe": load_datasets([multi])}


VOLUMES = _volumes()


@pytest.mark.parametrize("source", sorted(VOLUMES))
@pytest.mark.parametrize("draft", [True, False], ids=["draft", "approved"])
def test_binary_seg_has_no_dciodvfy_errors(source: str, draft: bool, tmp_path: Path) -> None:
    vol = VOLUMES[source]
    seg = build_seg(
        vol,
        _labels(vol),
        "leg",
        draft=draft,
        algorithm_name="leg",
        algorithm_version=4,
        operator=None if draft else "Müller^Anna",
        series_number=950,
    )
    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_to_bytes(seg))
    lines = _dciodvfy(path)
    errors = [line for line in lines if "Error" in line]
    assert errors == [], "\n".join(lines)


def test_binary_seg_without_any_muscle_has_no_dciodvfy_errors(tmp_path: Path) -> None:
    vol = VOLUMES["classic"]
    seg = build_seg(
        vol,
        np.zeros(vol.shape, np.uint8),
        "thigh",
        draft=True,
        algorithm_name="thigh",
        algorithm_version=1,
        series_number=951,
    )
    path = tmp_path / "empty.dcm"
    path.write_bytes(seg_to_bytes(seg))
    lines = _dciodvfy(path)
    assert [line for line in lines if "Error" in line] == [], "\n".join(lines)


@pytest.mark.parametrize("draft", [True, False], ids=["draft", "approved"])
def test_labelmap_seg_has_no_dciodvfy_errors(draft: bool, tmp_path: Path) -> None:
    vol = VOLUMES["classic"]
    seg = build_seg(
        vol,
        _labels(vol),
        "leg",
        draft=draft,
        algorithm_name="leg",
        algorithm_version=4,
        operator=None if draft else "Doe^Jane",
        seg_type="LABELMAP",
        series_number=952,
    )
    path = tmp_path / "labelmap.dcm"
    path.write_bytes(seg_to_bytes(seg))
    lines = _dciodvfy(path)
    if any("Information Object Not found" in line for line in lines):
        pytest.skip("this dciodvfy predates Label Map Segmentation Storage (2024); it cannot check LABELMAP")
    assert [line for line in lines if "Error" in line] == [], "\n".join(lines)
