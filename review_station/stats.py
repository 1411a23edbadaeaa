"""Per-muscle statistics of a label volume (Dafne's *Calculate statistics*) and their CSV export; no Qt."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TextIO

import numpy as np

from review_station.domain import Segment

PERCENTILES = (0, 25, 50, 75, 100)


@dataclass(frozen=True)
class MuscleStats:
    """Statistics of one label value; intensity figures are NaN for a muscle with no voxel."""

    value: int
    key: str
    name: str
    slices: int
    voxels: int
    volume_ml: float
    mean: float
    std: float
    p0: float
    p25: float
    p50: float
    p75: float
    p100: float


CSV_COLUMNS = tuple(f.name for f in fields(MuscleStats))


def muscle_statistics(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    segments: Sequence[Segment],
) -> list[MuscleStats]:
    """One row per segment (in the given order), plus rows for label values present but not in ``segments``.

    Volume in ml = voxels × dz × dy × dx / 1000 (spacing in mm). Percentiles use linear interpolation.
    """
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8, got {labels.dtype}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=256)
    known = {s.value for s in segments}
    extra = [
        Segment(int(v), f"label_{v}", f"Label {v}", (255, 255, 255))
        for v in np.flatnonzero(counts)
        if v and int(v) not in known
    ]
    rows = []
    for seg in [*segments, *extra]:
        n = int(counts[seg.value])
        if n == 0:
            nan = math.nan
            rows.append(MuscleStats(seg.value, seg.key, seg.name, 0, 0, 0.0, nan, nan, nan, nan, nan, nan, nan))
            continue
        mask = labels == seg.value
        values = image[mask].astype(np.float64)
        p = np.percentile(values, PERCENTILES)
        rows.append(
            MuscleStats(
                value=seg.value,
                key=seg.key,
                name=seg.name,
                slices=int(mask.any(axis=(1, 2)).sum()),
                voxels=n,
                volume_ml=n * voxel_ml,
                mean=float(values.mean()),
                std=float(values.std()),
                p0=float(p[0]),
                p25=float(p[1]),
                p50=float(p[2]),
                p75=float(p[3]),
                p100=float(p[4]),
            )
        )
    return rows


def _cell(v: object) -> object:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_csv(stats: Sequence[MuscleStats], out: Path | TextIO) -> None:
    """CSV with a header row (``CSV_COLUMNS``); empty cells for figures of empty muscles.

    A path is written to a temporary file first and renamed into place, so it is never left half-written.
    """
    if isinstance(out, Path):
        tmp = out.with_name(out.name + ".part")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            write_csv(stats, fh)
        tmp.replace(out)
        return
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for row in stats:
        w.writerow([_cell(v) for v in astuple(row)])


def dice_per_label(reference: np.ndarray, labels: np.ndarray, values: Sequence[int]) -> dict[int, float]:
    """Dice of each label value between two uint8 label volumes (NaN where both lack it), in one pass."""
    if reference.shape != labels.shape:
        raise ValueError(f"label volumes differ in shape: {reference.shape} and {labels.shape}")
    joint = np.bincount(reference.ravel().astype(np.uint16) * 256 + labels.ravel(), minlength=65536)
    joint = joint.reshape(256, 256)
    in_ref, in_lab = joint.sum(axis=1), joint.sum(axis=0)
    out = {}
    for v in values:
        total = int(in_ref[v] + in_lab[v])
        out[int(v)] = math.nan if total == 0 else 2.0 * int(joint[v, v]) / total
    return out
