"""Offline files for ``laurel review --open-local``: a volume ``.npy``/``.npz`` and labels ``.npy``/``.npz``.

The label ``.npz`` is the phantom's ground-truth format (``labels``, ``spacing``, ``origin``,
``label_values``, ``label_keys``). Nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from review_station.domain import Segment, Volume, default_segments


def _load(path: Path) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return None, {k: z[k] for k in z.files}
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), {}
    raise ValueError(f"{path.name}: expected a .npy or .npz file")


def _spacing(meta: dict[str, np.ndarray]) -> tuple[float, float, float] | None:
    if "spacing" not in meta:
        return None
    sp = [float(v) for v in np.asarray(meta["spacing"]).ravel()]
    if len(sp) != 3 or min(sp) <= 0:
        raise ValueError(f"spacing must be three positive numbers (dz, dy, dx), got {sp}")
    return (sp[0], sp[1], sp[2])


def load_local(volume: Path, labels: Path | None = None) -> tuple[Volume, np.ndarray, list[Segment]]:
    """Read a volume and its labels (empty if none); ValueError with the reason when they do not fit."""
    arr, meta = _load(volume)
    if arr is None:
        if "image" not in meta:
            raise ValueError(f"{volume.name}: the .npz has no 'image' array")
        arr = meta["image"]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{volume.name}: need a numeric (z, y, x) array, got {arr.dtype} {arr.shape}")
    spacing = _spacing(meta)
    keys: dict[int, str] = {}
    if labels is None:
        lab = np.zeros(arr.shape, dtype=np.uint8)
    else:
        lab_arr, lmeta = _load(labels)
        if lab_arr is None:
            if "labels" not in lmeta:
                raise ValueError(f"{labels.name}: the .npz has no 'labels' array")
            lab_arr = lmeta["labels"]
            spacing = spacing or _spacing(lmeta)
            if "label_values" in lmeta and "label_keys" in lmeta:
                keys = {int(v): str(k) for v, k in zip(lmeta["label_values"], lmeta["label_keys"], strict=True)}
        if lab_arr.shape != arr.shape:
            raise ValueError(f"labels {lab_arr.shape} and volume {arr.shape} differ in shape")
        if lab_arr.dtype != np.uint8:
            if not np.issubdtype(lab_arr.dtype, np.integer) or lab_arr.min() < 0 or lab_arr.max() > 255:
                raise ValueError(f"{labels.name}: labels must be integers 0..255, got {lab_arr.dtype}")
            lab_arr = lab_arr.astype(np.uint8)
        lab = np.ascontiguousarray(lab_arr)
    values = sorted(set(keys) | {int(v) for v in np.unique(lab) if v})
    if not values:
        values = [1]
    return Volume(arr.astype(np.float32), spacing or (1.0, 1.0, 1.0)), lab, default_segments(values, keys)
