"""The per-label report of a model on labelled cases: Dice, 95th-percentile Hausdorff distance (mm) and
volume difference, per case and summarised per label, as JSON and as text.

Conventions: a label absent from both the reference and the prediction of a case is not scored for that
case; absent from one of them it scores Dice 0 and no Hausdorff distance (counted as ``missed``). HD95 is
the larger of the two directed 95th-percentile surface distances (as MONAI's ``percentile=95``), in mm with
the case's voxel spacing. Volume difference is predicted minus reference, in millilitres and in percent of
the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Case = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    surface: np.ndarray = mask & ~eroded
    return surface


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float | None:
    """Symmetric 95th-percentile Hausdorff distance in mm between two masks; None when one is empty."""
    from scipy import ndimage

    if not pred.any() or not ref.any():
        return None
    both = pred | ref
    lo = [max(0, int(idx.min()) - 2) for idx in np.nonzero(both)]
    hi = [int(idx.max()) + 3 for idx in np.nonzero(both)]
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    p, r = pred[crop], ref[crop]
    sp, sr = _surface(p), _surface(r)
    to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(to_ref[sp], 95), np.percentile(to_pred[sr], 95)))


def score_case(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], values: Iterable[int]
) -> dict[int, dict[str, float | None]]:
    """``{value: {dice, hd95_mm, volume_ref_ml, volume_pred_ml, volume_diff_ml, volume_diff_pct}}`` for
    every label present in ``ref`` or ``pred``."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts_p = np.bincount(pred.ravel(), minlength=256)
    counts_r = np.bincount(ref.ravel(), minlength=256)
    out: dict[int, dict[str, float | None]] = {}
    for v in values:
        n_p, n_r = int(counts_p[v]), int(counts_r[v])
        if n_p == 0 and n_r == 0:
            continue
        p, r = pred == v, ref == v
        inter = int(np.count_nonzero(p & r))
        vol_p, vol_r = n_p * voxel_ml, n_r * voxel_ml
        out[int(v)] = {
            "dice": 2.0 * inter / (n_p + n_r),
            "hd95_mm": hd95(p, r, spacing),
            "volume_ref_ml": vol_r,
            "volume_pred_ml": vol_p,
            "volume_diff_ml": vol_p - vol_r,
            "volume_diff_pct": 100.0 * (vol_p - vol_r) / vol_r if vol_r > 0 else None,
        }
    return out


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "min": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(arr.mean()), 4),
        "median": round(float(np.median(arr)), 4),
        "min": round(float(arr.min()), 4),
    }


def evaluate_cases(
    apply: Callable[[np.ndarray, tuple[float, float, float]], np.ndarray],
    cases: Iterable[tuple[str, Case]],
    labels: Sequence[Mapping[str, Any]],
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Apply a model to named cases and build the report (see the module docstring)."""
    names = {int(lab["value"]): str(lab["key"]) for lab in labels}
    per_case: list[dict[str, Any]] = []
    per_label: dict[int, list[dict[str, float | None]]] = {v: [] for v in names}
    for i, (case_name, (image, ref, spacing)) in enumerate(cases):
        pred = apply(image, spacing)
        scores = score_case(pred, ref, spacing, names)
        unknown = sorted(set(np.unique(ref).tolist()) - set(names) - {0})
        if unknown:
            logger.warning("case %s: reference values %s are not labels of the model; not scored", case_name, unknown)
        for v, sc in scores.items():
            per_label[v].append(sc)
        present = [sc["dice"] for v, sc in scores.items() if sc["volume_ref_ml"]]
        per_case.append(
            {
                "case": case_name,
                "mean_dice": round(float(np.mean([d for d in present if d is not None])), 4) if present else None,
                "labels": {names[v]: _rounded(sc) for v, sc in scores.items()},
            }
        )
        if progress is not None:
            progress(i + 1)
    summary: list[dict[str, Any]] = []
    for v, rows in per_label.items():
        scored = [r for r in rows if r["volume_ref_ml"]]
        hds = [float(r["hd95_mm"]) for r in scored if r["hd95_mm"] is not None]
        pcts = [abs(float(r["volume_diff_pct"])) for r in scored if r["volume_diff_pct"] is not None]
        summary.append(
            {
                "value": v,
                "key": names[v],
                "cases": len(scored),
                "dice": _stats([float(r["dice"] or 0.0) for r in scored]),
                "hd95_mm": _stats(hds),
                "missed": sum(1 for r in scored if r["hd95_mm"] is None),
                "false_positive_cases": sum(1 for r in rows if not r["volume_ref_ml"]),
                "volume_diff_ml_mean": round(float(np.mean([float(r["volume_diff_ml"] or 0.0) for r in scored])), 3)
                if scored
                else None,
                "volume_diff_abs_pct_mean": round(float(np.mean(pcts)), 2) if pcts else None,
            }
        )
    means = [row["dice"]["mean"] for row in summary if row["dice"]["mean"] is not None]
    return {
        "cases": len(per_case),
        "mean_dice": round(float(np.mean(means)), 4) if means else None,
        "labels": summary,
        "per_case": per_case,
    }


def _rounded(sc: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(float(v), 4)) for k, v in sc.items()}


def format_report(report: Mapping[str, Any], title: str = "") -> str:
    """The report as a fixed-width text table, one row per label."""
    lines = [title] if title else []
    lines.append(f"{report['cases']} case(s); mean Dice over labels {_f(report.get('mean_dice'))}")
    header = (
        f"{'label':32} {'cases':>5} {'Dice mean':>9} {'median':>7} {'min':>6} {'HD95 mm':>8} {'missed':>6} "
        f"{'dVol ml':>8} {'|dVol| %':>8}"
    )
    lines += [header, "-" * len(header)]
    for row in report["labels"]:
        lines.append(
            f"{row['key'][:32]:32} {row['cases']:>5} {_f(row['dice']['mean']):>9} {_f(row['dice']['median']):>7} "
            f"{_f(row['dice']['min']):>6} {_f(row['hd95_mm']['median'], 1):>8} {row['missed']:>6} "
            f"{_f(row['volume_diff_ml_mean'], 1):>8} {_f(row['volume_diff_abs_pct_mean'], 1):>8}"
        )
    lines.append("HD95: median over cases; dVol: mean predicted minus reference; |dVol| %: mean absolute percent")
    return "\n".join(lines)


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"
