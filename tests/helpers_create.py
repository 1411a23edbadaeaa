"""Helpers for the model-creation tests: SYNTHETIC phantom subjects written as DICOM series + DICOM-SEG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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
    from dicom_node.seg import build_seg, seg_to_bytes
    from dicom_node.volume import load_series
    from models.phantom import PhantomSpec, generate, write_series

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
    volume = load_series(files)
    labels = np.asarray(ph.labels, dtype=np.uint8)
    assert labels.shape == volume.shape, (labels.shape, volume.shape)
    seg = build_seg(
        volume,
        labels,
        "leg",
        draft=False,
        algorithm_name="phantom ground truth",
        algorithm_version="1",
        operator="Truth^Phantom",
        series_number=900,
    )
    seg_path = out / "seg.dcm"
    seg_path.write_bytes(seg_to_bytes(seg))
    return files, seg_path, ph
