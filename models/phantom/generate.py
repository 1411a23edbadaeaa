"""``generate(spec)``: one SYNTHETIC MR series and its ground truth, deterministic for a spec."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np

from models.labels import label_names, muscles, region_labels
from models.phantom.anatomy import LimbAnatomy, LimbRender, draw_subject, render_limb
from models.phantom.atlas import ATLASES
from models.phantom.contrast import CONTRASTS, ContrastModel, acquisition_parameters, compose
from models.phantom.noise import add_rician, coil_bias
from models.phantom.scanner import ScannerProfile, scanner_profile
from models.phantom.spec import Phantom, PhantomSpec

log = logging.getLogger(__name__)

MATRICES: tuple[int, ...] = (256, 288, 320, 352, 384, 416, 432)
MARGIN_MM = 8.0
MAX_PIXEL = 4095.0  # 12 bits stored


@dataclass(frozen=True)
class Geometry:
    """The resolved sampling of a spec: sizes, spacing, levels and limb placement."""

    n_slices: int
    matrix: int
    slice_thickness: float
    pixel_spacing: float
    levels: np.ndarray  # (nz,) anatomical level t of each slice
    origin: tuple[float, float, float]
    centres: dict[str, tuple[float, float]]  # side → (x, y) patient mm of the limb centre
    scale: float  # < 1 when the subject was shrunk to fit a fixed field of view


def _stream(spec: PhantomSpec, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, 1 if spec.region == "leg" else 2, stream, *extra])


def resolve_geometry(spec: PhantomSpec, limbs: dict[str, LimbAnatomy]) -> tuple[Geometry, dict[str, LimbAnatomy]]:
    """Draw (or take from the spec) the sampling and place the limbs in the field of view."""
    rng = _stream(spec, 2)
    drawn_slices = int(rng.integers(20, 41))
    drawn_thickness = float(rng.choice(np.arange(5.0, 8.01, 0.5)))
    drawn_spacing = round(float(np.clip(rng.normal(1.0417, 0.025), 0.97, 1.12)), 4)
    matrix_pick = float(rng.uniform())
    t_centre = float(rng.uniform(0.42, 0.6))
    gap = float(rng.uniform(6.0, 35.0))
    shift = (float(rng.uniform(-10, 10)), float(rng.uniform(-8, 8)))
    table = (
        round(float(rng.uniform(-5, 5)), 2),
        round(float(rng.uniform(-60, 20)), 2),
        round(float(rng.uniform(-400, -150)), 1),
    )

    nz = spec.n_slices or drawn_slices
    dz = spec.slice_thickness or drawn_thickness
    length = ATLASES[spec.region].length_mm
    half_span = (nz - 1) * dz / 2 / length
    t_centre = float(np.clip(t_centre, min(0.5, 0.1 + half_span), max(0.5, 0.92 - half_span)))
    levels = t_centre + (np.arange(nz) - (nz - 1) / 2) * dz / length

    sides = ["right", "left"] if spec.limbs == "both" else [spec.limbs]
    ext = {s: limbs[s].max_extent(levels) for s in sides}
    height = max(e["b_ant"] + e["b_post"] for e in ext.values())
    if spec.limbs == "both":
        width = ext["right"]["a_lat"] + ext["right"]["a_med"] + gap + ext["left"]["a_med"] + ext["left"]["a_lat"]
    else:
        e = ext[spec.limbs]
        width = e["a_lat"] + e["a_med"]
    need = max(width + 2 * abs(shift[0]), height + 2 * abs(shift[1])) + 2 * MARGIN_MM

    scale = 1.0
    if spec.matrix is not None and spec.pixel_spacing is not None:
        matrix, spacing = spec.matrix, spec.pixel_spacing
        fov = matrix * spacing
        if need > fov:
            scale = fov / need
            log.info("subject shrunk by %.2f to fit a %.0f mm field of view", scale, fov)
    elif spec.matrix is not None:
        matrix = spec.matrix
        spacing = round(max(drawn_spacing, need / matrix), 4)
    else:
        spacing = spec.pixel_spacing or drawn_spacing
        fits = [m for m in MATRICES if m * spacing >= need]
        if fits:
            matrix = fits[min(int(matrix_pick * min(len(fits), 3)), len(fits) - 1)]
        else:
            matrix = MATRICES[-1]
            spacing = round(need / matrix, 4) + 0.0001
    if scale != 1.0:
        limbs = {s: limbs[s].scaled(scale) for s in limbs}
        ext = {s: {k: v * scale for k, v in e.items()} for s, e in ext.items()}
        gap *= scale
        width *= scale
        shift = (shift[0] * scale, shift[1] * scale)

    centres: dict[str, tuple[float, float]] = {}
    if spec.limbs == "both":
        # place the pair so that its bounding box is centred, right limb at small x (patient's right)
        left_edge = -(width / 2)
        cx_r = left_edge + ext["right"]["a_lat"]
        cx_l = cx_r + ext["right"]["a_med"] + gap + ext["left"]["a_med"]
        for s, cx in (("right", cx_r), ("left", cx_l)):
            e = ext[s]
            centres[s] = (cx + shift[0] + table[0], (e["b_ant"] - e["b_post"]) / 2 + shift[1] + table[1])
    else:
        e = ext[spec.limbs]
        off = (e["a_lat"] - e["a_med"]) / 2 * (1 if spec.limbs == "right" else -1)
        centres[spec.limbs] = (
            off + shift[0] + table[0],
            (e["b_ant"] - e["b_post"]) / 2 + shift[1] + table[1],
        )
    x0 = table[0] - (matrix - 1) / 2 * spacing
    y0 = table[1] - (matrix - 1) / 2 * spacing
    z0 = table[2] - (nz - 1) / 2 * dz
    geom = Geometry(
        n_slices=nz,
        matrix=matrix,
        slice_thickness=float(dz),
        pixel_spacing=float(spacing),
        levels=levels,
        origin=(round(x0, 4), round(y0, 4), round(z0, 4)),
        centres=centres,
        scale=scale,
    )
    return geom, limbs


def _severities(spec: PhantomSpec, limb: LimbAnatomy, side: str) -> np.ndarray | None:
    if not spec.fat_infiltration:
        return None
    return np.array([spec.severity(k, side) if k else 0.0 for k in limb.muscle_keys], np.float32)


def generate(spec: PhantomSpec) -> Phantom:
    """Generate the SYNTHETIC series described by ``spec`` (same spec → identical arrays)."""
    from scipy import ndimage

    right, left = draw_subject(spec.region, spec.seed)
    geom, limbs = resolve_geometry(spec, {"right": right, "left": left})
    nz, n, p = geom.n_slices, geom.matrix, geom.pixel_spacing
    profile = scanner_profile(spec.scanner) if spec.scanner is not None else None
    model = CONTRASTS[spec.contrast] if profile is None else profile.contrast_model(CONTRASTS[spec.contrast])
    lut_values = {lab.key: lab.value for lab in region_labels(spec.region)}
    image = np.zeros((nz, n, n), np.float32)
    labels = np.zeros((nz, n, n), np.uint8)
    tissue = np.zeros((nz, n, n), np.uint8)
    xs_all = geom.origin[0] + np.arange(n) * p
    ys_all = geom.origin[1] + np.arange(n) * p
    for side_name, (cx, cy) in geom.centres.items():
        limb = limbs[side_name]
        e = limb.max_extent(geom.levels)
        reach = max(e.values()) * 1.05 + 3.0
        cols = np.nonzero(np.abs(xs_all - cx) <= reach)[0]
        rows = np.nonzero(np.abs(ys_all - cy) <= reach)[0]
        if cols.size == 0 or rows.size == 0:
            continue
        c0, c1, r0, r1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
        side = -1 if side_name == "right" else 1
        rend = _render(spec, profile, limb, geom, ys_all[r0:r1] - cy, xs_all[c0:c1] - cx, side, side_name)
        lab_lut = np.zeros(len(limb.muscle_keys) + 1, np.uint8)
        for i, key in enumerate(limb.muscle_keys):
            if key is not None:
                lab_lut[i + 1] = lut_values[f"{key}_{side_name}"]
        if profile is None:
            patch_labels = lab_lut[rend.muscle.astype(np.int64) + 1]
            signal = compose(rend.tissue, rend.muscle, rend.fat_fraction, rend.texture, model, limb.muscle_tone)
            signal = ndimage.gaussian_filter(signal, (0.0, 0.5, 0.5), truncate=3.0)
            patch_tissue = rend.tissue
        else:
            signal, patch_labels, patch_tissue = _scanner_patch(spec, profile, rend, model, limb, lab_lut, geom)
        image[:, r0:r1, c0:c1] += signal
        lab_view = labels[:, r0:r1, c0:c1]
        np.copyto(lab_view, patch_labels, where=patch_labels > 0)
        tis_view = tissue[:, r0:r1, c0:c1]
        np.copyto(tis_view, patch_tissue, where=patch_tissue > 0)

    acq_rng = _stream(spec, 4, {"pd": 1, "t1": 2, "t2fs": 3}[spec.contrast])
    acquisition = acquisition_parameters(spec.contrast, acq_rng)
    gain = float(acq_rng.uniform(1300.0, 2000.0))
    bias_z, bias_yx = coil_bias(acq_rng, nz, n, n, (geom.slice_thickness, p, p), model.bias_strength)
    image *= np.float32(gain)
    image *= bias_yx[None]
    image *= bias_z[:, None, None]
    snr = spec.snr
    if profile is not None:
        image *= profile.ap_field(n, _stream(spec, 5, 2))[None]
        snr = spec.snr * profile.snr_factor
        acquisition["ReceiveCoilName"] = profile.coil_name
    sigma = gain * model.signal[3] / snr
    image = add_rician(image, sigma, acq_rng)
    np.clip(image, 0.0, MAX_PIXEL, out=image)

    names = label_names(spec.region)
    if spec.limbs != "both":
        keep = {lab.value for lab in region_labels(spec.region) if lab.side == spec.limbs}
        names = {v: k for v, k in names.items() if v in keep}
    acquisition.update(
        {
            "gain": gain,
            "noise_sigma": float(sigma),
            "subject_scale": geom.scale,
            "levels": [round(float(t), 4) for t in geom.levels],
            "n_muscles_per_limb": len(muscles(spec.region)),
            "scanner": spec.scanner,
        }
    )
    return Phantom(
        image=image,
        labels=labels,
        label_names=names,
        spacing=(geom.slice_thickness, p, p),
        origin=geom.origin,
        spec=spec,
        acquisition=acquisition,
        tissue=tissue,
    )


def _render(
    spec: PhantomSpec,
    profile: ScannerProfile | None,
    limb: LimbAnatomy,
    geom: Geometry,
    ys: np.ndarray,
    xs: np.ndarray,
    side: int,
    side_name: str,
) -> LimbRender:
    """Render one limb at the slice levels, or at the sub-slice levels of a scanner profile."""
    levels, dz = geom.levels, geom.slice_thickness
    if profile is not None:
        limb = profile.adjust_limb(copy.deepcopy(limb))
        levels = profile.sub_levels(levels, dz, ATLASES[spec.region].length_mm)
        dz = dz / profile.sub_slices
    return render_limb(
        limb,
        levels,
        ys,
        xs,
        side,
        seed=spec.seed,
        severities=_severities(spec, limb, side_name),
        spacing_mm=geom.pixel_spacing,
        dz_mm=dz,
    )


def _scanner_patch(
    spec: PhantomSpec,
    profile: ScannerProfile,
    rend: LimbRender,
    model: ContrastModel,
    limb: LimbAnatomy,
    lab_lut: np.ndarray,
    geom: Geometry,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signal, labels and tissue of a limb patch seen by ``profile``: realistic fat in muscle, partial
    volume through the slice (sub-slices averaged; labels and tissue of the central sub-slice) and blur."""
    from scipy import ndimage

    k = profile.sub_slices
    rng = _stream(spec, 5, 1, limb.field_seed)
    ff = profile.fat_in_muscle(
        rng, rend.tissue, rend.muscle, rend.fat_fraction, geom.pixel_spacing, geom.slice_thickness / k
    )
    signal = compose(rend.tissue, rend.muscle, ff, rend.texture, model, limb.muscle_tone)
    nz, ny, nx = geom.n_slices, signal.shape[1], signal.shape[2]
    signal = signal.reshape(nz, k, ny, nx).mean(axis=1)
    signal = ndimage.gaussian_filter(signal, (0.0, profile.blur_px, profile.blur_px), truncate=3.0)
    centre = k // 2
    muscle = rend.muscle.reshape(nz, k, ny, nx)[:, centre]
    tissue = np.ascontiguousarray(rend.tissue.reshape(nz, k, ny, nx)[:, centre])
    return signal.astype(np.float32), lab_lut[muscle.astype(np.int64) + 1], tissue
