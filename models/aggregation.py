"""Weight arithmetic for merging models: delta, apply delta, scale, average, linear, delta and partial merge.

*Package code* (travels inside every model package; numpy only, so a federation server merges without
TensorFlow). Every function takes and returns lists of numpy arrays in the network's weight order; layer
names (``<layer>/<variable>``) select the blocks of a partial merge.

- :func:`linear_merge` is Dafne's rule: ``(1 - w) · current + w · update`` (w = 0.5 by default).
- :func:`delta_merge` applies what an update *learned* (``update - base``, where ``base`` is the version it
  was trained from) to a newer ``current``, discounted by ``discount ** staleness`` (staleness = how many
  versions ``current`` is ahead of ``base``), so a late update still counts, but less.
- :func:`partial_merge` is SegViz's rule: the representation block (layers whose names start with one of
  ``representation`` prefixes, by default the encoder) is averaged, the task block is kept from one side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Weights = Sequence[np.ndarray]

DEFAULT_REPRESENTATION: tuple[str, ...] = ("enc",)


def _check(a: Weights, b: Weights, what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} weight arrays against {len(b)}; the models differ")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if np.shape(x) != np.shape(y):
            raise ValueError(f"{what}: weight {i} has shape {np.shape(x)} against {np.shape(y)}")


def _out(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.asarray(like).dtype)


def delta(weights: Weights, base: Weights) -> list[np.ndarray]:
    """``weights - base`` per array (what training on top of ``base`` changed)."""
    _check(weights, base, "delta")
    return [_out(np.asarray(w, np.float64) - np.asarray(b, np.float64), w) for w, b in zip(weights, base, strict=True)]


def apply_delta(base: Weights, change: Weights, scale: float = 1.0) -> list[np.ndarray]:
    """``base + scale · change``."""
    _check(base, change, "apply_delta")
    return [
        _out(np.asarray(b, np.float64) + scale * np.asarray(d, np.float64), b)
        for b, d in zip(base, change, strict=True)
    ]


def scale(weights: Weights, factor: float) -> list[np.ndarray]:
    """``factor · weights``."""
    return [_out(np.asarray(w, np.float64) * factor, w) for w in weights]


def average(weight_sets: Sequence[Weights], coefficients: Sequence[float] | None = None) -> list[np.ndarray]:
    """Weighted average of several weight lists; ``coefficients`` default to equal and are normalised."""
    if not weight_sets:
        raise ValueError("average needs at least one set of weights")
    coef = np.ones(len(weight_sets)) if coefficients is None else np.asarray(coefficients, dtype=np.float64)
    if coef.shape != (len(weight_sets),) or (coef < 0).any() or coef.sum() <= 0:
        raise ValueError("coefficients must be one non-negative value per weight set, not all zero")
    coef = coef / coef.sum()
    for other in weight_sets[1:]:
        _check(weight_sets[0], other, "average")
    out = []
    for i, first in enumerate(weight_sets[0]):
        acc = sum(c * np.asarray(ws[i], np.float64) for c, ws in zip(coef, weight_sets, strict=True))
        out.append(_out(np.asarray(acc), first))
    return out


def linear_merge(current: Weights, update: Weights, weight: float = 0.5) -> list[np.ndarray]:
    """Dafne's merge: ``(1 - weight) · current + weight · update``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"merge weight must be within 0..1, got {weight}")
    return average([current, update], [1.0 - weight, weight])


def delta_merge(
    current: Weights,
    base: Weights,
    update: Weights,
    staleness: int = 0,
    discount: float = 0.5,
    weight: float = 0.5,
) -> list[np.ndarray]:
    """``current + weight · discount**staleness · (update - base)``.

    ``base`` is the version the update was trained from; ``staleness`` the number of versions ``current``
    is ahead of it. With ``staleness=0`` and ``current == base`` this equals :func:`linear_merge`.
    """
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    if not 0.0 <= discount <= 1.0 or not 0.0 <= weight <= 1.0:
        raise ValueError("discount and weight must be within 0..1")
    return apply_delta(current, delta(update, base), weight * discount**staleness)


def partial_merge(
    current: Weights,
    update: Weights,
    layer_names: Sequence[str],
    representation: Sequence[str] = DEFAULT_REPRESENTATION,
    weight: float = 0.5,
    task_from: str = "current",
) -> list[np.ndarray]:
    """SegViz merge: weights whose layer name starts with a ``representation`` prefix are averaged
    (``weight`` for the update), the rest (task block) is taken from ``task_from`` ('current'/'update')."""
    _check(current, update, "partial_merge")
    if len(layer_names) != len(current):
        raise ValueError(f"{len(layer_names)} layer names for {len(current)} weight arrays")
    if task_from not in ("current", "update"):
        raise ValueError(f"task_from must be 'current' or 'update', got {task_from!r}")
    prefixes = tuple(representation)
    if not any(name.startswith(prefixes) for name in layer_names):
        raise ValueError(f"no layer starts with {prefixes}; nothing would be merged")
    merged = linear_merge(current, update, weight)
    keep = current if task_from == "current" else update
    return [
        m if name.startswith(prefixes) else np.array(k, copy=True)
        for m, k, name in zip(merged, keep, layer_names, strict=True)
    ]


def representation_mask(
    layer_names: Sequence[str], representation: Sequence[str] = DEFAULT_REPRESENTATION
) -> list[bool]:
    """Which weights belong to the representation block."""
    prefixes = tuple(representation)
    return [name.startswith(prefixes) for name in layer_names]
