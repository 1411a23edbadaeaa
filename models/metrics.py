"""Dice similarity, per label and overall, as Dafne reports it.

Dafne computes ``DSC = 2|A ∩ B| / (|A| + |B|)`` for each ROI on each slice and averages them weighted by
the number of voxels of the reference (manually refined) ROI on that slice. :func:`dice` returns that
voxel-weighted mean as ``"overall"``, plus each label's volume Dice and their plain ``"mean"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def dice(
    auto: np.ndarray, reference: np.ndarray, labels: Mapping[int, str] | Iterable[int] | None = None
) -> dict[str, float]:
    """Dice of ``auto`` against ``reference`` (label volumes of one shape, (z, y, x) or 2D).

    ``labels``: ``{value: key}`` (result keys are the names) or values (keys ``str(value)``); default all
    non-zero values present in either. Labels absent from both volumes are left out. ``overall`` is the
    per-slice Dice averaged with the reference's voxel counts as weights (slices where a label is only in
    ``auto`` weigh 0, as in the paper); ``mean`` is the unweighted mean of the per-label volume Dice.
    """
    a, b = np.asarray(auto), np.asarray(reference)
    if a.shape != b.shape:
        raise ValueError(f"label volumes differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    if labels is None:
        values = sorted(int(v) for v in np.union1d(np.unique(a), np.unique(b)) if v != 0)
        names = {v: str(v) for v in values}
    elif isinstance(labels, Mapping):
        names = {int(v): str(k) for v, k in labels.items()}
    else:
        names = {int(v): str(v) for v in labels}
    n_slices = a.shape[0]
    flat_a, flat_b = a.reshape(n_slices, -1), b.reshape(n_slices, -1)
    result: dict[str, float] = {}
    weighted_sum, weight_total = 0.0, 0.0
    for value, key in names.items():
        in_a, in_b = flat_a == value, flat_b == value
        size_a, size_b = in_a.sum(axis=1), in_b.sum(axis=1)
        if size_a.sum() + size_b.sum() == 0:
            continue
        inter = (in_a & in_b).sum(axis=1)
        result[key] = float(2.0 * inter.sum() / (size_a.sum() + size_b.sum()))
        both = size_a + size_b
        per_slice = np.divide(2.0 * inter, both, out=np.zeros(n_slices), where=both > 0)
        weighted_sum += float((per_slice * size_b).sum())
        weight_total += float(size_b.sum())
    per_label = list(result.values())
    result["mean"] = float(np.mean(per_label)) if per_label else float("nan")
    result["overall"] = weighted_sum / weight_total if weight_total else float("nan")
    return result
