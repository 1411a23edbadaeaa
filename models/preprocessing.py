"""Preprocessing: limb split and mirroring, in-plane resampling, crop/pad, intensity normalisation, and
the exact inverse that maps the network's probabilities back onto the input grid.

This module is *package code* (its source travels inside every model package): numpy and scipy only,
SimpleITK inside the optional bias-field function.

Geometry (CONTRACTS.md): volumes are ``(z, y, x)``; column ``x`` grows towards the patient's LEFT, so the
patient's right limb lies at small ``x``. A both-limb image is split at the gap between the limbs; the left
limb is mirrored along ``x`` so that every patch the network sees looks like a right limb. Each limb is
resampled to the model's in-plane spacing on a ``patch`` grid centred on the limb. Label values: right
``1..n``, left ``n+1..2n``; the network predicts ``0..n`` for one (right-looking) limb.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

LIMB_CHOICES = ("auto", "both", "right", "left")
LIMB_HANDLING = ("split", "none")


@dataclass(frozen=True)
class InputSpec:
    """What the network expects: in-plane spacing (mm), patch size (pixels) and intensity handling.

    ``limbs`` is the limb handling: ``"split"`` (both-limb images are split, the left limb mirrored) or
    ``"none"`` (the whole image is one patch, never mirrored: any anatomy, labels ``1..n`` as they are).
    ``percentiles`` are the robust normalisation bounds over the limb's voxels; ``bias_field`` runs N4
    (SimpleITK) before normalising.
    """

    spacing: tuple[float, float] = (1.5, 1.5)
    patch: tuple[int, int] = (128, 128)
    limbs: str = "split"
    percentiles: tuple[float, float] = (1.0, 99.0)
    bias_field: bool = False

    def __post_init__(self) -> None:
        sp = tuple(float(s) for s in self.spacing)
        pa = tuple(int(p) for p in self.patch)
        pc = tuple(float(p) for p in self.percentiles)
        if len(sp) != 2 or not all(0.1 <= s <= 10.0 for s in sp):
            raise ValueError(f"spacing must be two in-plane values within 0.1..10 mm, got {self.spacing}")
        if len(pa) != 2 or not all(16 <= p <= 1024 for p in pa):
            raise ValueError(f"patch must be two sizes within 16..1024 pixels, got {self.patch}")
        if self.limbs not in LIMB_HANDLING:
            raise ValueError(f"limbs handling must be one of {LIMB_HANDLING}, got {self.limbs!r}")
        if len(pc) != 2 or not 0.0 <= pc[0] < pc[1] <= 100.0:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {pc}")
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "patch", pa)
        object.__setattr__(self, "percentiles", pc)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists for tuples)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        unknown = set(data) - {"spacing", "patch", "limbs", "percentiles", "bias_field"}
        if unknown:
            raise ValueError(f"unknown input spec fields {sorted(unknown)}")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)


@dataclass
class Limb:
    """One limb of the input: its columns ``[x_start, x_stop)``, whether it is mirrored, and the patch
    grid: patch pixel ``(i, j)`` sits at position ``(y0 + i * ry, x0 + j * rx)`` of the (mirrored) limb
    sub-image, ``r`` = model spacing / input spacing. The origin is a whole pixel, so that a model whose
    spacing equals the input's samples the input pixels themselves."""

    side: str
    x_start: int
    x_stop: int
    mirror: bool
    y0: int
    x0: int


@dataclass
class Prepared:
    """Network input for one volume: ``patches`` (limbs × slices, P, P, 1), limb-major, plus geometry."""

    patches: np.ndarray
    limbs: list[Limb]
    slices: list[int]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    spec: InputSpec
    extra: dict[str, Any] = field(default_factory=dict)


def foreground_mask(volume: np.ndarray) -> np.ndarray:
    """Tissue versus air: above 10 % of the robust maximum (air in MR magnitude images is noise)."""
    vol = np.asarray(volume, dtype=np.float32)
    sample = vol[:, ::4, ::4]
    hi = float(np.percentile(sample, 99.5)) if sample.size else 0.0
    if hi <= 0:
        return np.zeros(vol.shape, dtype=bool)
    mask: np.ndarray = np.greater(vol, np.float32(0.1 * hi))
    return mask


def find_limbs(volume: np.ndarray, limbs: str = "auto") -> list[tuple[str, int, int]]:
    """The limbs in a volume as ``(side, x_start, x_stop)``, right limb first.

    ``auto`` finds the two largest tissue blobs of the slice-averaged foreground; two of comparable size
    are two limbs split at the emptiest column between them; one blob is a single limb whose side is
    the image half it lies in (right limb at small ``x``). ``both``/``right``/``left`` force the answer.
    """
    return _split(tissue_projection(foreground_mask(volume)), limbs)


def tissue_projection(fg: np.ndarray) -> np.ndarray:
    """Columns/rows that are tissue in at least 30 % of the slices (drops noise specks)."""
    proj: np.ndarray = np.greater(fg.mean(axis=0), 0.3)
    if not proj.any():
        proj = np.asarray(np.any(fg, axis=0), dtype=bool)
    return proj


def _split(proj: np.ndarray, limbs: str) -> list[tuple[str, int, int]]:
    from scipy import ndimage

    if limbs not in LIMB_CHOICES:
        raise ValueError(f"limbs must be one of {LIMB_CHOICES}, got {limbs!r}")
    width = proj.shape[1]
    profile = proj.sum(axis=0).astype(np.float64)
    lab, n = ndimage.label(proj)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] if n else np.zeros(0)
    order = np.argsort(sizes)[::-1]
    centroids = [float(np.nonzero(lab == k + 1)[1].mean()) for k in order[:2]]
    two = n >= 2 and sizes[order[1]] >= 0.25 * sizes[order[0]]
    if limbs == "auto":
        if two:
            limbs = "both"
        elif n == 0:
            limbs = "right"
        else:
            blob = np.nonzero(lab == order[0] + 1)[1]
            split = _valley(profile, int(blob.min()), int(blob.max()) + 1)
            limbs = "both" if split is not None else ("right" if centroids[0] < width / 2 else "left")
    if limbs == "right":
        return [("right", 0, width)]
    if limbs == "left":
        return [("left", 0, width)]
    if two:
        lo, hi = sorted(int(np.rint(c)) for c in centroids)
        split = lo + int(np.argmin(profile[lo:hi])) if hi > lo else width // 2
    else:
        cols = np.nonzero(profile)[0]
        found = _valley(profile, int(cols.min()), int(cols.max()) + 1) if cols.size else None
        split = found if found is not None else width // 2
    return [("right", 0, split), ("left", split, width)]


def _valley(profile: np.ndarray, start: int, stop: int) -> int | None:
    """A column in the middle third of ``[start, stop)`` with at most 60 % of the tissue height of both
    sides: two touching limbs; ``None`` when there is no such valley."""
    span = stop - start
    if span < 12:
        return None
    a, b = start + span // 3, start + 2 * span // 3
    k = a + int(np.argmin(profile[a:b]))
    left, right = profile[start:k].max(), profile[k + 1 : stop].max() if k + 1 < stop else 0.0
    return k if profile[k] <= 0.6 * min(left, right) else None


def normalise(volume: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Robust intensity normalisation: the low/high percentiles of the masked voxels map to 0 and 1."""
    vol = np.asarray(volume, dtype=np.float32)
    vals = vol[mask] if mask.any() else vol.ravel()
    if vals.size > 2_000_000:
        vals = vals[:: vals.size // 1_000_000]
    lo, hi = (float(v) for v in np.percentile(vals, percentiles))
    lo = min(lo, 0.0) if lo < 0 else 0.0  # air stays at 0 so that padding is air
    scale = hi - lo if hi > lo else 1.0
    return np.clip((vol - lo) / scale, 0.0, 3.0).astype(np.float32)


def bias_field_correct(volume: np.ndarray, spacing: tuple[float, float, float], shrink: int = 4) -> np.ndarray:
    """N4 bias-field correction (SimpleITK) on a shrunk copy, the field applied at full resolution."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.asarray(volume, dtype=np.float32))
    img.SetSpacing((float(spacing[2]), float(spacing[1]), float(spacing[0])))
    mask = sitk.GetImageFromArray(foreground_mask(volume).astype(np.uint8))
    mask.CopyInformation(img)
    factors = [shrink, shrink, 1]
    small = sitk.Shrink(img, factors)
    small_mask = sitk.Shrink(mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([20, 20])
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(img)
    out = sitk.GetArrayFromImage(img) / np.exp(sitk.GetArrayFromImage(log_field))
    return out.astype(np.float32)


def _axis_weights(n_out: int, origin: int, ratio: float, n_in: int) -> tuple[np.ndarray, ...]:
    """Linear-interpolation indices and weights of ``n_out`` samples spaced ``ratio`` input pixels apart
    from ``origin``; samples outside the input get weight 0 (air)."""
    pos = origin + np.arange(n_out) * ratio
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    w0, w1 = 1.0 - frac, frac
    w0 = np.where((i0 >= 0) & (i0 < n_in), w0, 0.0).astype(np.float32)
    w1 = np.where((i0 + 1 >= 0) & (i0 + 1 < n_in), w1, 0.0).astype(np.float32)
    return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), w0, w1


def _resample(sub: np.ndarray, limb: Limb, ratio: tuple[float, float], patch: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of ``sub`` (z, h, w) on the limb's patch grid → (z, P, P)."""
    ya, yb, wya, wyb = _axis_weights(patch[0], limb.y0, ratio[0], sub.shape[1])
    xa, xb, wxa, wxb = _axis_weights(patch[1], limb.x0, ratio[1], sub.shape[2])
    rows = sub[:, ya, :] * wya[None, :, None] + sub[:, yb, :] * wyb[None, :, None]
    return rows[:, :, xa] * wxa[None, None, :] + rows[:, :, xb] * wxb[None, None, :]


def _limb_view(volume: np.ndarray, limb: Limb) -> np.ndarray:
    sub = volume[:, :, limb.x_start : limb.x_stop]
    return sub[:, :, ::-1] if limb.mirror else sub


def preprocess(
    volume: np.ndarray,
    spacing: Sequence[float],
    spec: Mapping[str, Any] | InputSpec,
    *,
    limbs: str = "auto",
    slices: Sequence[int] | None = None,
) -> Prepared:
    """Volume → single-limb patches at the model's spacing (see the module docstring)."""
    vol = np.asarray(volume)
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise ValueError(f"volume must be a non-empty (z, y, x) array, got shape {vol.shape}")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive values (dz, dy, dx) in mm, got {spacing}")
    if not np.isfinite(vol).all():
        raise ValueError("volume contains NaN or infinite values")
    ispec = spec if isinstance(spec, InputSpec) else InputSpec.from_dict(spec)
    if ispec.limbs == "none":  # one unmirrored patch over the whole image: labels 1..n as they are
        limbs = "right"
    sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    vol = vol.astype(np.float32, copy=False)
    if ispec.bias_field:
        vol = bias_field_correct(vol, sp)
    fg = foreground_mask(vol)
    norm = normalise(vol, fg, ispec.percentiles)
    zs = list(range(vol.shape[0])) if slices is None else [int(s) for s in slices]
    if any(not 0 <= s < vol.shape[0] for s in zs):
        raise ValueError(f"slices must be within 0..{vol.shape[0] - 1}")
    ratio = (ispec.spacing[0] / sp[1], ispec.spacing[1] / sp[2])
    out: list[np.ndarray] = []
    found: list[Limb] = []
    proj = tissue_projection(fg)
    for side, x0, x1 in _split(proj, limbs):
        limb = Limb(side, x0, x1, side == "left", 0, 0)
        sub_fg = _limb_view(proj[None], limb)[0]
        if sub_fg.any():
            ys, xs = np.nonzero(sub_fg)
            cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
            extent = ((ys.max() - ys.min() + 1) / ratio[0], (xs.max() - xs.min() + 1) / ratio[1])
            if extent[0] > ispec.patch[0] or extent[1] > ispec.patch[1]:
                logger.warning("the %s limb is larger than the model's field of view; edges are cut", side)
        else:
            cy, cx = (sub_fg.shape[0] - 1) / 2.0, (sub_fg.shape[1] - 1) / 2.0
        limb.y0 = int(np.rint(cy - ispec.patch[0] / 2.0 * ratio[0]))
        limb.x0 = int(np.rint(cx - ispec.patch[1] / 2.0 * ratio[1]))
        out.append(_resample(_limb_view(norm, limb)[zs], limb, ratio, ispec.patch))
        found.append(limb)
    patches = np.concatenate(out, axis=0)[..., None].astype(np.float32)
    return Prepared(patches, found, zs, (int(vol.shape[0]), int(vol.shape[1]), int(vol.shape[2])), sp, ispec)


def labels_to_patches(labels: np.ndarray, prepared: Prepared, n_muscles: int) -> np.ndarray:
    """Label volume → per-limb class patches ``0..n`` (uint8, same order as ``prepared.patches``).

    Nearest-neighbour sampling on the patch grid; the left limb's values ``n+1..2n`` become ``1..n``.
    """
    lab = np.asarray(labels)
    if lab.shape != prepared.shape:
        raise ValueError(f"labels shape {lab.shape} differs from the volume's {prepared.shape}")
    if lab.size and int(lab.max()) > 2 * n_muscles:
        raise ValueError(f"label values must be within 0..{2 * n_muscles}, got {int(lab.max())}")
    sp, ispec = prepared.spacing, prepared.spec
    ratio = (ispec.spacing[0] / sp[1], ispec.spacing[1] / sp[2])
    out = []
    for limb in prepared.limbs:
        sub = _limb_view(lab, limb)[prepared.slices]
        cls = np.zeros(sub.shape, dtype=np.uint8)
        if limb.side == "right":
            sel = (sub >= 1) & (sub <= n_muscles)
            cls[sel] = sub[sel]
        else:
            sel = sub > n_muscles
            cls[sel] = sub[sel] - n_muscles
        iy = _nearest(ispec.patch[0], limb.y0, ratio[0], sub.shape[1])
        ix = _nearest(ispec.patch[1], limb.x0, ratio[1], sub.shape[2])
        grid = cls[:, np.clip(iy, 0, None), :][:, :, np.clip(ix, 0, None)]
        grid[:, iy < 0, :] = 0
        grid[:, :, ix < 0] = 0
        out.append(grid)
    return np.concatenate(out, axis=0)


def _nearest(n_out: int, origin: int, ratio: float, n_in: int) -> np.ndarray:
    pos = np.rint(origin + np.arange(n_out) * ratio).astype(np.int64)
    return np.where((pos >= 0) & (pos < n_in), pos, -1)


_POST_CHUNK = 2  # slices interpolated at once by postprocess


def postprocess(probs: np.ndarray, prepared: Prepared, n_muscles: int) -> np.ndarray:
    """Per-limb class probabilities (limbs × slices, P, P, n+1) → uint8 label volume on the input grid.

    The probabilities are interpolated bilinearly back to every input pixel the patch covers and the
    arg-max taken there (pixels outside every patch are background); mirrored limbs are mirrored back and
    the left limb's classes ``1..n`` become ``n+1..2n``.
    """
    z, h, w = prepared.shape
    result = np.zeros((z, h, w), dtype=np.uint8)
    nz = len(prepared.slices)
    pr = np.asarray(probs, dtype=np.float32)
    if pr.shape[0] != nz * len(prepared.limbs) or pr.shape[-1] != n_muscles + 1:
        raise ValueError(f"probabilities of shape {pr.shape} do not match the prepared input")
    sp, ispec = prepared.spacing, prepared.spec
    ratio = (ispec.spacing[0] / sp[1], ispec.spacing[1] / sp[2])
    ph, pw = ispec.patch
    for k, limb in enumerate(prepared.limbs):
        p = pr[k * nz : (k + 1) * nz]
        sub_w = limb.x_stop - limb.x_start
        # input pixels covered by the patch grid: origin <= pixel <= origin + (P - 1) * ratio
        ylo = max(0, limb.y0)
        yhi = min(h, int(np.floor(limb.y0 + (ph - 1) * ratio[0] + 1e-6)) + 1)
        xlo = max(0, limb.x0)
        xhi = min(sub_w, int(np.floor(limb.x0 + (pw - 1) * ratio[1] + 1e-6)) + 1)
        if yhi <= ylo or xhi <= xlo:
            continue
        ya, yb, wya, wyb = _inverse_weights(np.arange(ylo, yhi), limb.y0, ratio[0], ph)
        xa, xb, wxa, wxb = _inverse_weights(np.arange(xlo, xhi), limb.x0, ratio[1], pw)
        cls = np.empty((nz, yhi - ylo, xhi - xlo), dtype=np.uint8)
        for c in range(0, nz, _POST_CHUNK):  # a few slices at a time: the interpolated stack stays in cache
            q = p[c : c + _POST_CHUNK]
            rows = q[:, ya] * wya[None, :, None, None] + q[:, yb] * wyb[None, :, None, None]
            full = rows[:, :, xa] * wxa[None, None, :, None] + rows[:, :, xb] * wxb[None, None, :, None]
            cls[c : c + _POST_CHUNK] = np.argmax(full, axis=-1)
        if limb.side == "left":
            cls = np.where(cls > 0, cls + n_muscles, 0).astype(np.uint8)
        sub = np.zeros((nz, h, sub_w), dtype=np.uint8)
        sub[:, ylo:yhi, xlo:xhi] = cls
        if limb.mirror:
            sub = sub[:, :, ::-1]
        result[prepared.slices, :, limb.x_start : limb.x_stop] = sub
    return result


def _inverse_weights(pixels: np.ndarray, origin: int, ratio: float, n_patch: int) -> tuple[np.ndarray, ...]:
    """Patch-axis interpolation indices/weights for input ``pixels`` (the inverse of the patch grid)."""
    pos = (pixels - origin) / ratio
    pos = np.clip(pos, 0.0, n_patch - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_patch - 2)
    frac = (pos - i0).astype(np.float32)
    return i0, i0 + 1, (1.0 - frac).astype(np.float32), frac
