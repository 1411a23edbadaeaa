"""``laurel phantom``: write a SYNTHETIC MR phantom series with its ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer


def parse_fat_infiltration(text: str) -> dict[str, float]:
    """``soleus=0.6,gastrocnemius_medialis=0.3`` → ``{"soleus": 0.6, ...}`` (clear error otherwise)."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected MUSCLE=SEVERITY, got {item!r} (e.g. soleus=0.6)")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"severity of {name.strip()!r} is not a number: {value!r}") from None
    return out


def phantom(
    region: str = typer.Option(..., "--region", help="leg or thigh"),
    contrast: str = typer.Option(
        ..., "--contrast", help="pd, t1 or t2fs; a comma-separated list writes one study with several series"
    ),
    seed: int = typer.Option(..., "--seed", min=0, help="subject number; the same seed gives the same bytes"),
    out: Path = typer.Option(..., "--out", help="output folder: OUT/series/*.dcm and OUT/labels.npz"),
    limbs: str = typer.Option("both", "--limbs", help="both, left or right"),
    fat_infiltration: str = typer.Option(
        "", "--fat-infiltration", help="fatty replacement, e.g. soleus=0.6,gastrocnemius_medialis=0.3"
    ),
    slices: int | None = typer.Option(None, "--slices", help="number of slices (default: 20-40 by seed)"),
    matrix: int | None = typer.Option(None, "--matrix", help="rows = columns (default: 256-432 by seed)"),
    thickness: float | None = typer.Option(None, "--thickness", help="slice thickness in mm (default 5-8)"),
    spacing: float | None = typer.Option(None, "--spacing", help="pixel spacing in mm (default ~1.04)"),
    snr: float = typer.Option(30.0, "--snr", help="signal-to-noise ratio of muscle"),
    enhanced: bool = typer.Option(False, "--enhanced", help="one Enhanced MR Image (multi-frame) per series"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace phantom files already in OUT/series"),
    seg: bool = typer.Option(False, "--seg", help="also write the ground truth as an approved DICOM-SEG (OUT/seg.dcm)"),
) -> None:
    """Write a SYNTHETIC phantom series (DICOM MR) and its ground-truth labels."""
    from models.phantom import PhantomSpec, generate, write_labels, write_series
    from models.phantom.dicom_io import StudyInfo, series_description

    contrasts = [c.strip() for c in contrast.split(",") if c.strip()]
    try:
        fat = parse_fat_infiltration(fat_infiltration)
        specs = [
            PhantomSpec(
                region=region,  # type: ignore[arg-type]
                contrast=c,  # type: ignore[arg-type]
                seed=seed,
                limbs=limbs,  # type: ignore[arg-type]
                n_slices=slices,
                matrix=matrix,
                slice_thickness=thickness,
                pixel_spacing=spacing,
                snr=snr,
                fat_infiltration=fat,
            )
            for c in contrasts
        ]
        if not specs:
            raise ValueError("give at least one contrast (pd, t1 or t2fs)")
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc

    study = StudyInfo.for_subject(region, seed)
    series_dir = out / "series"
    existing = sorted(series_dir.glob("*.dcm")) if series_dir.is_dir() else []
    if existing and not overwrite:
        typer.secho(
            f"error: {series_dir} already holds {len(existing)} DICOM file(s); choose an empty --out "
            "or pass --overwrite to replace earlier phantom files",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=2)
    for old in existing:
        if old.name.startswith(("MR", "EMR")):
            old.unlink()
    labels: Path | None = None
    for number, spec in enumerate(specs, start=1):
        start = time.perf_counter()
        ph = generate(spec)
        paths = write_series(ph, series_dir, study=study, series_number=number, enhanced=enhanced)
        took = time.perf_counter() - start
        nz, ny, nx = ph.shape
        typer.echo(
            f"series {number}: {series_description(ph)!r}, {len(paths)} file(s), {nz} slices of {ny}x{nx}, "
            f"spacing {ph.spacing[1]:.4f} x {ph.spacing[2]:.4f} x {ph.spacing[0]:.1f} mm, {took:.2f} s"
        )
        if labels is None:
            labels = write_labels(ph, out / "labels.npz")
            if seg:
                typer.echo(f"wrote {write_truth_seg(ph, paths, out / 'seg.dcm')} (ground truth as DICOM-SEG)")
    typer.echo(f"wrote {series_dir}/ (StudyInstanceUID {study.StudyInstanceUID})")
    typer.echo(f"wrote {labels} (ground truth, {len(ph.label_names)} labels) - SYNTHETIC data, not a patient")


def write_truth_seg(ph: Any, paths: list[Path], out: Path) -> Path:
    """The phantom's ground truth as an approved DICOM-SEG of the series ``paths`` (the node's SEG writer),
    as a PACS holds it once segmentations were approved elsewhere."""
    import numpy as np

    from dicom_node.dicom.seg import build_seg, seg_to_bytes
    from dicom_node.dicom.volume import load_series

    volume = load_series(paths)
    ds = build_seg(
        volume,
        np.asarray(ph.labels, dtype=np.uint8),
        ph.spec.region,
        draft=False,
        algorithm_name="SYNTHETIC phantom ground truth",
        algorithm_version="1",
        operator="Phantom^Ground truth",
        series_number=900,
    )
    out.write_bytes(seg_to_bytes(ds))
    return out
