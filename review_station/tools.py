"""Mask operations on uint8 label arrays ``(z, y, x)`` or slices ``(y, x)``; numpy/SciPy/SimpleITK, no Qt.

Conventions: a label array holds one muscle value per pixel (0 = background), so two muscles never overlap.
Operations that *add* pixels to a muscle take only unlabelled pixels unless told otherwise
(``protect_others`` / ``overwrite_others``), so a correction of one muscle never silently eats its neighbour;
the brush, as in Dafne, paints over other muscles by default (the active muscle wins).
``brush``/``stroke`` change the slice in place (they are the hot path); every other operation returns a new
array and leaves its input alone. 2-D operations applied to a volume act slice by slice: slices are thick
(5-8 mm), so a 3-D neighbourhood would mix anatomy that is far apart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

BrushShape = Literal["round", "square"]
BBox = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)

_CROSS = ndimage.generate_binary_structure(2, 1)
_SQUARE = ndimage.generate_binary_structure(2, 2)


def _check_labels(labels: np.ndarray, ndim: tuple[int, ...] = (2, 3)) -> None:
    if labels.dtype != np.uint8:
        raise TypeError(f"label arrays are uint8, got {labels.dtype}")
    if labels.ndim not in ndim:
        raise ValueError(f"expected a label array with {' or '.join(map(str, ndim))} dimensions, got {labels.ndim}")


def _check_value(value: int) -> None:
    if not 0 <= value <= 255:
        raise ValueError(f"label value {value} is outside 0..255")


@lru_cache(maxsize=128)
def footprint(radius: int, shape: BrushShape = "round") -> np.ndarray:
    """Brush footprint, bool ``(2r+1, 2r+1)``: a disk (as ``skimage.morphology.disk``) or a square."""
    if radius < 0:
        raise ValueError(f"brush radius must be >= 0, got {radius}")
    if shape not in ("round", "square"):
        raise ValueError(f"brush shape must be 'round' or 'square', got {shape!r}")
    r = np.arange(-radius, radius + 1)
    if shape == "square":
        fp = np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)
    else:
        fp = (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius
    fp.setflags(write=False)
    return fp


def union_bbox(a: BBox | None, b: BBox | None) -> BBox | None:
    """Smallest box holding both (None = empty)."""
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def brush(
    labels: np.ndarray,
    center: tuple[float, float],
    radius: int,
    *,
    value: int,
    shape: BrushShape = "round",
    erase: bool = False,
    erase_all: bool = False,
    image: np.ndarray | None = None,
    intensity_range: tuple[float, float] | None = None,
    protect_others: bool = False,
    locked: np.ndarray | None = None,
) -> BBox | None:
    """One brush dab on a 2-D label slice, in place; returns the box it covered (None if off the slice).

    Paint sets ``value``; erase clears ``value`` only, or every muscle with ``erase_all``. With
    ``intensity_range=(lo, hi)`` (the intensity-aware brush) only pixels whose ``image`` value lies in
    ``[lo, hi]`` are touched. ``protect_others`` paints only unlabelled pixels (and the muscle's own).
    ``locked`` (bool per label value, 256) marks muscles whose pixels the brush never changes.
    """
    _check_labels(labels, (2,))
    _check_value(value)
    fp = footprint(int(radius), shape)
    h, w = labels.shape
    cy, cx = round(center[0]), round(center[1])
    r = int(radius)
    y0, y1, x0, x1 = cy - r, cy + r + 1, cx - r, cx + r + 1
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if cy0 >= cy1 or cx0 >= cx1:
        return None
    mask = fp[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    region = labels[cy0:cy1, cx0:cx1]
    if intensity_range is not None:
        if image is None:
            raise ValueError("the intensity-aware brush needs the image slice")
        if image.shape != labels.shape:
            raise ValueError(f"image slice {image.shape} and label slice {labels.shape} differ in shape")
        lo, hi = intensity_range
        ireg = image[cy0:cy1, cx0:cx1]
        mask = mask & (ireg >= lo) & (ireg <= hi)
    if locked is not None:
        mask = mask & ~locked[region]
    if erase:
        if not erase_all:
            mask = mask & (region == value)
        region[mask] = 0
    else:
        if value == 0:
            raise ValueError("painting needs a muscle value > 0 (use erase to clear)")
        if protect_others:
            mask = mask & ((region == 0) | (region == value))
        region[mask] = value
    return (cy0, cy1, cx0, cx1)


def stroke(
    labels: np.ndarray,
    start: tuple[float, float],
    end: tuple[float, float],
    radius: int,
    **kwargs: object,
) -> BBox | None:
    """Dabs after ``start`` up to ``end`` (y, x), at most a third of the radius apart; returns their box.

    The dab at ``start`` itself is the end of the previous segment (or the stroke's first dab).
    """
    dy, dx = end[0] - start[0], end[1] - start[1]
    step = max(1.0, radius / 3.0)
    n = max(1, math.ceil(math.hypot(dy, dx) / step))
    box: BBox | None = None
    for i in range(1, n + 1):
        t = i / n
        box = union_bbox(box, brush(labels, (start[0] + t * dy, start[1] + t * dx), radius, **kwargs))  # type: ignore[arg-type]
    return box


def _per_slice(labels: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    _check_labels(labels)
    if labels.ndim == 2:
        return fn(labels)
    return np.stack([fn(s) for s in labels])


def grow(labels: np.ndarray, label: int, iterations: int = 1) -> np.ndarray:
    """Dilate ``label`` by ``iterations`` pixels (4-connected steps) into unlabelled pixels only."""
    _check_value(label)

    def one(s: np.ndarray) -> np.ndarray:
        m = s == label
        if not m.any() or iterations < 1:
            return s.copy()
        allowed = (s == 0) | m
        grown = ndimage.binary_dilation(m, _CROSS, iterations=iterations, mask=allowed)
        out = s.copy()
        out[grown & (s == 0)] = label
        return out

    return _per_slice(labels, one)


def shrink(labels: np.ndarray, label: int, iterations: int = 1) -> np.ndarray:
    """Erode ``label`` by ``iterations`` pixels into background; the edge of the slice does not erode."""
    _check_value(label)

    def one(s: np.ndarray) -> np.ndarray:
        m = s == label
        if not m.any() or iterations < 1:
            return s.copy()
        kept = ndimage.binary_erosion(m, _CROSS, iterations=iterations, border_value=1)
        out = s.copy()
        out[m & ~kept] = 0
        return out

    return _per_slice(labels, one)


def fill_holes(labels: np.ndarray, label: int, max_size: int | None = None) -> np.ndarray:
    """Fill the holes of ``label`` in each slice (all, or those of at most ``max_size`` pixels).

    Only unlabelled pixels are filled: another muscle enclosed by this one stays where it is.
    """
    _check_value(label)

    def one(s: np.ndarray) -> np.ndarray:
        m = s == label
        holes = ndimage.binary_fill_holes(m) & ~m
        if max_size is not None and holes.any():
            comp, n = ndimage.label(holes, _CROSS)
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            small = sizes <= max_size
            small[0] = False
            holes = small[comp]
        out = s.copy()
        out[holes & (s == 0)] = label
        return out

    return _per_slice(labels, one)


def remove_small_islands(labels: np.ndarray, label: int | None, min_size: int) -> np.ndarray:
    """Clear 8-connected pieces (per slice) of ``label`` (every muscle if None) below ``min_size`` px."""
    if label is not None:
        _check_value(label)

    def one(s: np.ndarray) -> np.ndarray:
        out = s.copy()
        values = [label] if label is not None else [int(v) for v in np.unique(s) if v != 0]
        for v in values:
            comp, n = ndimage.label(s == v, _SQUARE)
            if n == 0:
                continue
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            small = sizes < min_size
            small[0] = False
            out[small[comp]] = 0
        return out

    return _per_slice(labels, one)


def smooth(labels: np.ndarray, label: int, sigma: float = 1.0) -> np.ndarray:
    """Smooth the outline of ``label`` in each slice: a Gaussian of its mask thresholded at one half.

    Pixels leave the muscle where the smoothed mask falls below one half; they join it only when unlabelled,
    so smoothing one muscle never takes pixels from another.
    """
    _check_value(label)
    if sigma <= 0:
        raise ValueError(f"the smoothing sigma must be positive, got {sigma}")

    def one(s: np.ndarray) -> np.ndarray:
        m = s == label
        if not m.any():
            return s.copy()
        smoothed = ndimage.gaussian_filter(m.astype(np.float32), sigma, mode="nearest") >= 0.5
        out = s.copy()
        out[m & ~smoothed] = 0
        out[smoothed & (s == 0)] = label
        return out

    return _per_slice(labels, one)


def remove_overlap(masks: Mapping[int, np.ndarray], active: int | None = None) -> np.ndarray:
    """One uint8 label map from per-muscle binary masks that may overlap (e.g. masks imported from elsewhere).

    A label map cannot hold overlap, so this is where Dafne's "Remove overlap" happens: where masks overlap,
    the ``active`` muscle wins (the others lose those pixels); among the rest the higher value wins.
    """
    if not masks:
        raise ValueError("no masks given")
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"masks differ in shape: {sorted(shapes)}")
    if active is not None and active not in masks:
        raise ValueError(f"active muscle {active} is not among the masks {sorted(masks)}")
    out = np.zeros(shapes.pop(), dtype=np.uint8)
    order = sorted(v for v in masks if v != active) + ([active] if active is not None else [])
    for v in order:
        _check_value(v)
        out[np.asarray(masks[v], dtype=bool)] = v
    return out


def signed_distance(mask: np.ndarray, sampling: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Signed Euclidean distance to the mask's edge: negative inside, positive outside (float64)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the mask is empty")
    if mask.all():
        return -ndimage.distance_transform_edt(np.pad(mask, 1, constant_values=False), sampling)[1:-1, 1:-1]
    return ndimage.distance_transform_edt(~mask, sampling) - ndimage.distance_transform_edt(mask, sampling)


def labelled_neighbours(labels: np.ndarray, label: int, z: int) -> tuple[int, int]:
    """Nearest slices below and above ``z`` (exclusive) holding ``label``; ValueError if one is missing."""
    _check_labels(labels, (3,))
    present = np.flatnonzero((labels == label).any(axis=(1, 2)))
    below = present[present < z]
    above = present[present > z]
    if below.size == 0 or above.size == 0:
        side = "below" if below.size == 0 else "above"
        raise ValueError(f"no slice {side} slice {z + 1} contains this muscle: label one there first")
    return int(below[-1]), int(above[0])


def interpolate(
    labels: np.ndarray,
    label: int,
    z0: int,
    z1: int,
    *,
    slices: Sequence[int] | None = None,
    sampling: tuple[float, float] = (1.0, 1.0),
    overwrite_others: bool = False,
) -> np.ndarray:
    """Shape-based interpolation of ``label`` between labelled slices ``z0 < z1`` (returns a new volume).

    The muscle on each slice strictly between them (or only on ``slices``) becomes the zero level set of the
    linear blend of the signed distance maps of slices z0 and z1; its old pixels there are cleared first.
    New pixels go to unlabelled pixels only, unless ``overwrite_others``.
    """
    _check_labels(labels, (3,))
    _check_value(label)
    if not 0 <= z0 < z1 < labels.shape[0]:
        raise ValueError(f"need 0 <= z0 < z1 < {labels.shape[0]}, got z0={z0}, z1={z1}")
    m0, m1 = labels[z0] == label, labels[z1] == label
    if not m0.any() or not m1.any():
        empty = z0 if not m0.any() else z1
        raise ValueError(f"slice {empty + 1} does not contain this muscle: interpolation needs it on both ends")
    d0, d1 = signed_distance(m0, sampling), signed_distance(m1, sampling)
    targets = range(z0 + 1, z1) if slices is None else [z for z in slices if z0 < z < z1]
    out = labels.copy()
    for z in targets:
        t = (z - z0) / (z1 - z0)
        shape = (1.0 - t) * d0 + t * d1 < 0
        s = out[z]
        s[s == label] = 0
        s[shape if overwrite_others else shape & (s == 0)] = label
    return out


def _sitk_slice(a: np.ndarray, spacing: tuple[float, float]) -> Any:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(a))
    img.SetSpacing((float(spacing[1]), float(spacing[0])))
    return img


def register_slices(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    spacing: tuple[float, float] = (1.0, 1.0),
    method: Literal["affine", "bspline"] = "bspline",
    seed: int = 1,
) -> object:
    """SimpleITK transform mapping points of ``fixed`` to ``moving`` (2-D slices): affine, then B-spline.

    Multi-resolution, correlation metric (adjacent slices share the contrast), sampled; ~100-400 ms on 432².
    """
    import SimpleITK as sitk

    if fixed.shape != moving.shape or fixed.ndim != 2:
        raise ValueError(f"need two 2-D slices of one shape, got {fixed.shape} and {moving.shape}")
    f = sitk.Cast(_sitk_slice(fixed.astype(np.float32), spacing), sitk.sitkFloat32)
    m = sitk.Cast(_sitk_slice(moving.astype(np.float32), spacing), sitk.sitkFloat32)
    affine = sitk.CenteredTransformInitializer(
        f, m, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=40, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
    reg.SetInitialTransform(affine, inPlace=True)
    reg.Execute(f, m)
    if method == "affine":
        return affine
    if method != "bspline":
        raise ValueError(f"registration method must be 'affine' or 'bspline', got {method!r}")
    mesh = [5, 5]  # coarse control grid on the 4x shrunk slice: smooth, and ~100 ms
    bspline = sitk.BSplineTransformInitializer(f, mesh)
    reg2 = sitk.ImageRegistrationMethod()
    reg2.SetMetricAsCorrelation()
    reg2.SetMetricSamplingStrategy(reg2.RANDOM)
    reg2.SetMetricSamplingPercentage(0.2, seed)
    reg2.SetInterpolator(sitk.sitkLinear)
    reg2.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=20, maximumNumberOfCorrections=5)
    reg2.SetShrinkFactorsPerLevel([4])
    reg2.SetSmoothingSigmasPerLevel([1.0])
    reg2.SetMovingInitialTransform(affine)
    reg2.SetInitialTransform(bspline, inPlace=True)
    reg2.Execute(f, m)
    return sitk.CompositeTransform([affine, bspline])


def propagate(
    image: np.ndarray,
    labels: np.ndarray,
    z_from: int,
    z_to: int,
    *,
    label: int | None = None,
    spacing: tuple[float, float] = (1.0, 1.0),
    method: Literal["affine", "bspline"] = "bspline",
    overwrite_others: bool = False,
) -> np.ndarray:
    """Carry the labels of slice ``z_from`` onto slice ``z_to`` by registering the image slices (new slice).

    With ``label=None`` slice ``z_to`` becomes the warped label slice (every muscle); with a ``label`` only
    that muscle is replaced there, taking unlabelled pixels (or any, with ``overwrite_others``).
    Labels are warped with nearest-neighbour interpolation, so values stay exact.
    """
    import SimpleITK as sitk

    _check_labels(labels, (3,))
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    n = labels.shape[0]
    if not (0 <= z_from < n and 0 <= z_to < n) or z_from == z_to:
        raise ValueError(f"need two different slices within 1..{n}, got {z_from + 1} and {z_to + 1}")
    src = labels[z_from] if label is None else np.where(labels[z_from] == label, labels[z_from], 0).astype(np.uint8)
    if not src.any():
        raise ValueError(f"slice {z_from + 1} has nothing to propagate")
    transform = register_slices(image[z_to], image[z_from], spacing=spacing, method=method)
    fixed = _sitk_slice(image[z_to].astype(np.float32), spacing)
    warped_img = sitk.Resample(
        _sitk_slice(src, spacing), fixed, transform, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8
    )
    warped = sitk.GetArrayFromImage(warped_img).astype(np.uint8)
    if label is None:
        return warped
    out = labels[z_to].copy()
    out[out == label] = 0
    put = warped == label
    out[put if overwrite_others else put & (out == 0)] = label
    return out
