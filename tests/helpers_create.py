"""Helpers for the model-creation tests: SYNTHETIC phantom subjects written as DICOM series + DICOM-SEG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_labelled_phantom(
    out: Path,
    seed: int,
    *,
    contrast: str = "t1",
    n_slices: int = 8,
    matrix: int = 160,
    pixel_spacing: float = 2.0,
    slice_thickness: float = 8.0,
) -> tuple[list[Path], Path, Any]:
    """A SYNTHETIC leg phantom as an MR series plus its ground truth as an approved DICOM-SEG (the node's
    writer), both under ``out``; returns the image files, the SEG file and the phantom."""
    from models.phantom import PhantomSpec, generate, write_series
    from models.phantom.cli import write_truth_seg

    spec = PhantomSpec(
        region="leg",
        contrast=contrast,  # type: ignore[arg-type]
        seed=seed,
        n_slices=n_slices,
        matrix=matrix,
        pixel_spacing=pixel_spacing,
        slice_thickness=slice_thickness,
    )
    ph = generate(spec)
    files = write_series(ph, out / "series")
    return files, write_truth_seg(ph, files, out / "seg.dcm"), ph
