"""Every phantom series passes dciodvfy (dicom3tools) and reads back in SimpleITK with its geometry."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from models.phantom import Phantom, PhantomSpec, StudyInfo, generate, write_series

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed")
pytestmark = pytest.mark.peers


@cache
def phantom(region: str, contrast: str, limbs: str = "both") -> Phantom:
    spec = PhantomSpec(region, contrast, 31, limbs=limbs, n_slices=3, matrix=256 if region == "leg" else 384)  # type: ignore[arg-type]
    return generate(spec)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) that dciodvfy reports for one file."""
    assert DCIODVFY is not None
    res = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (res.stdout + res.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


@needs_dciodvfy
@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
@pytest.mark.parametrize("contrast", ["pd", "t1", "t2fs"])
@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_dciodvfy_reports_no_errors(tmp_path: Path, region: str, contrast: str, enhanced: bool) -> None:
    paths = write_series(phantom(region, contrast), tmp_path, enhanced=enhanced)
    assert paths
    for path in paths:
        errors, warnings = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"
        assert warnings == [], f"{path.name}: {warnings}"


@needs_dciodvfy
@pytest.mark.parametrize("limbs", ["left", "right"])
def test_dciodvfy_accepts_one_sided_series(tmp_path: Path, limbs: str) -> None:
    ph = phantom("leg", "t1", limbs)
    for enhanced in (False, True):
        for path in write_series(ph, tmp_path / str(enhanced), enhanced=enhanced, series_number=3):
            errors, _ = dciodvfy(path)
            assert errors == [], f"{path.name}: {errors}"


@needs_dciodvfy
def test_dciodvfy_accepts_the_site_b_scanner_profile(tmp_path: Path) -> None:
    ph = generate(PhantomSpec("leg", "t1", 31, n_slices=3, matrix=256, scanner="site_b"))
    assert ph.acquisition["ReceiveCoilName"] == "SYNTH_FLEX_4CH"
    for enhanced in (False, True):
        for path in write_series(ph, tmp_path / str(enhanced), enhanced=enhanced):
            errors, warnings = dciodvfy(path)
            assert errors == [] and warnings == [], f"{path.name}: {errors} {warnings}"


def _expected_geometry(ph: Phantom) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    dz, dy, dx = ph.spacing
    return (dx, dy, dz), ph.origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_simpleitk_reads_the_classic_series_with_its_geometry(tmp_path: Path) -> None:
    import SimpleITK as sitk

    ph = phantom("thigh", "t1")
    write_series(ph, tmp_path, study=StudyInfo.for_subject("thigh", 31))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    spacing, origin, direction = _expected_geometry(ph)
    assert np.allclose(image.GetSpacing(), spacing, atol=1e-4)
    assert np.allclose(image.GetOrigin(), origin, atol=1e-3)
    assert np.allclose(image.GetDirection(), direction)
    array = sitk.GetArrayFromImage(image)
    assert np.array_equal(array, np.clip(np.rint(ph.image), 0, 4095).astype(array.dtype))


def test_simpleitk_reads_the_enhanced_instance_with_its_geometry(tmp_path: Path) -> None:
    import SimpleITK as sitk

    ph = phantom("leg", "pd")
    (path,) = write_series(ph, tmp_path, enhanced=True)
    image = sitk.ReadImage(str(path))
    spacing, origin, direction = _expected_geometry(ph)
    assert image.GetSize() == (ph.shape[2], ph.shape[1], ph.shape[0])
    assert np.allclose(image.GetSpacing(), spacing, atol=1e-4)
    assert np.allclose(image.GetOrigin(), origin, atol=1e-3)
    assert np.allclose(image.GetDirection(), direction)
    array = sitk.GetArrayFromImage(image)
    assert np.array_equal(array, np.clip(np.rint(ph.image), 0, 4095).astype(array.dtype))
