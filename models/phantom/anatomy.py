"""One subject's limbs drawn from the atlas, and their rendering into tissue maps, vectorised over slices.

:func:`draw_subject` perturbs the atlas by seed (limb size and shape, fat thickness, muscle proportions
and positions, bone size); the left limb is the mirror image of the right one with its own small
perturbation. :func:`render_limb` turns one limb into tissue classes, a muscle index and a fat
fraction per voxel for a block of slices, with NumPy distance and angle fields (no per-voxel loops).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from models.phantom.atlas import ATLASES, RegionAtlas, interpolate, knot_values
from models.phantom.noise import smooth_field

# tissue classes of the rendered maps
AIR, SKIN, FAT, MUSCLE, CORTEX, MARROW, FIBROUS, VESSEL, NERVE = range(9)
TISSUE_NAMES = ("air", "skin", "fat", "muscle", "cortex", "marrow", "fibrous", "vessel", "nerve")


@dataclass
class Bone:
    """A drawn long bone: centre knots (compartment coordinates), radius and cortex knots (mm), shape."""

    name: str
    cu: np.ndarray
    cv: np.ndarray
    radius_mm: np.ndarray
    cortex_mm: np.ndarray
    lobes: int
    lobe_amp: float
    lobe_angle: float  # rad
    crest_amp: float


@dataclass
class Vessel:
    """A drawn vessel or nerve: centre knots (|c| > 1: subcutaneous), radius in mm."""

    name: str
    cu: np.ndarray
    cv: np.ndarray
    radius_mm: float
    kind: str


@dataclass
class LimbAnatomy:
    """The drawn parameters of one limb (knot arrays of shape (5,) or (n, 5))."""

    region: str
    atlas: RegionAtlas
    outline: dict[str, np.ndarray]  # a_lat, a_med, b_ant, b_post, fat (mm)
    harmonics: np.ndarray  # (k, 2): cos/sin amplitudes of outline harmonics k = 2..
    fat_angle: tuple[float, float]  # (amplitude, direction rad) of the fat thickness variation
    skin_mm: float
    muscle_keys: list[str | None]
    muscles: dict[str, np.ndarray]  # cu, cv, ax, ay, w, tilt: (n_muscles, 5)
    streak_angle: np.ndarray  # (n_muscles,) rad
    bones: list[Bone]
    vessels: list[Vessel]
    tendons: list[dict[str, np.ndarray]]
    rotation_deg: float
    fascia_level: float
    streak_level: float
    warp: float
    muscle_tone: np.ndarray  # (n_muscles,) relative signal of each muscle
    field_seed: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def max_extent(self, t: np.ndarray) -> dict[str, float]:
        """Largest skin-surface half-widths (mm) over the levels ``t``, with outline bumps and rotation."""
        bump = 1.0 + float(np.abs(self.harmonics).sum())
        ext = {k: float(interpolate(self.outline[k], t).max()) * bump for k in ("a_lat", "a_med", "b_ant", "b_post")}
        rot = np.deg2rad(abs(self.rotation_deg))
        grow = 1.0 + float(np.sin(rot)) * 0.6
        return {k: v * grow for k, v in ext.items()}

    def scaled(self, factor: float) -> LimbAnatomy:
        """A copy with every mm size multiplied by ``factor`` (to fit a fixed field of view)."""
        out = copy.deepcopy(self)
        for k in out.outline:
            out.outline[k] = out.outline[k] * factor
        for b in out.bones:
            b.radius_mm = b.radius_mm * factor
            b.cortex_mm = b.cortex_mm * factor
        for v in out.vessels:
            v.radius_mm = v.radius_mm * factor
        return out


def _rng(seed: int, region: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 1 if region == "leg" else 2, stream])


def draw_subject(region: str, seed: int) -> tuple[LimbAnatomy, LimbAnatomy]:
    """The (right, left) limbs of subject ``seed``: one draw from the atlas, then a per-limb perturbation."""
    atlas = ATLASES[region]
    rng = _rng(seed, region, 1)
    size = float(np.clip(rng.normal(1.0, 0.09), 0.78, 1.25))
    aspect = float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
    fat_scale = float(np.clip(rng.lognormal(0.0, 0.38), 0.35, 2.6))
    outline = {
        "a_lat": knot_values(atlas.a_lat) * size * aspect,
        "a_med": knot_values(atlas.a_med) * size * aspect,
        "b_ant": knot_values(atlas.b_ant) * size / aspect,
        "b_post": knot_values(atlas.b_post) * size / aspect * float(rng.normal(1.0, 0.04)),
        "fat": knot_values(atlas.fat_mm) * fat_scale,
    }
    # the muscle compartment grows with size, the fat layer adds to the outline
    extra_fat = outline["fat"] - knot_values(atlas.fat_mm)
    for k in ("a_lat", "a_med", "b_ant", "b_post"):
        outline[k] = outline[k] + extra_fat
    harmonics = rng.normal(0.0, 0.018, size=(3, 2))
    n = len(atlas.muscles)
    mus = {
        name: np.stack([knot_values(getattr(m, attr)) for m in atlas.muscles])
        for name, attr in (
            ("cu", "cu"),
            ("cv", "cv"),
            ("ax", "ax"),
            ("ay", "ay"),
            ("w", "weight"),
            ("tilt", "tilt_deg"),
        )
    }
    mus["cu"] = mus["cu"] + rng.normal(0, 0.025, (n, 1)) + rng.normal(0, 0.01, (n, 5))
    mus["cv"] = mus["cv"] + rng.normal(0, 0.025, (n, 1)) + rng.normal(0, 0.01, (n, 5))
    mus["ax"] = mus["ax"] * np.clip(rng.normal(1, 0.08, (n, 1)), 0.75, 1.3) * rng.normal(1, 0.03, (n, 5))
    mus["ay"] = mus["ay"] * np.clip(rng.normal(1, 0.08, (n, 1)), 0.75, 1.3) * rng.normal(1, 0.03, (n, 5))
    mus["w"] = mus["w"] * np.clip(rng.normal(1, 0.07, (n, 1)), 0.8, 1.25) * rng.normal(1, 0.025, (n, 5))
    mus["tilt"] = mus["tilt"] + rng.normal(0, 5.0, (n, 1))
    bone_scale = size**0.5
    bones = [
        Bone(
            name=b.name,
            cu=knot_values(b.cu) + rng.normal(0, 0.02),
            cv=knot_values(b.cv) + rng.normal(0, 0.02),
            radius_mm=knot_values(b.radius_mm) * bone_scale * float(rng.normal(1, 0.05)),
            cortex_mm=knot_values(b.cortex_mm) * float(rng.normal(1, 0.08)),
            lobes=b.lobes,
            lobe_amp=b.lobe_amp * float(rng.uniform(0.8, 1.2)),
            lobe_angle=float(np.deg2rad(b.lobe_angle_deg + rng.normal(0, 6.0))),
            crest_amp=b.crest_amp * float(rng.uniform(0.7, 1.2)),
        )
        for b in atlas.bones
    ]
    vessels = [
        Vessel(
            name=v.name,
            cu=knot_values(v.cu) + rng.normal(0, 0.02),
            cv=knot_values(v.cv) + rng.normal(0, 0.02),
            radius_mm=v.radius_mm * float(rng.uniform(0.8, 1.2)),
            kind=v.kind,
        )
        for v in atlas.vessels
    ]
    tendons = [
        {
            "cu": knot_values(td.cu),
            "cv": knot_values(td.cv),
            "ax": knot_values(td.ax) * float(rng.uniform(0.85, 1.15)),
            "ay": knot_values(td.ay),
        }
        for td in atlas.tendons
    ]
    base = LimbAnatomy(
        region=region,
        atlas=atlas,
        outline=outline,
        harmonics=harmonics,
        fat_angle=(float(rng.uniform(0.0, 0.35)), float(rng.uniform(0, 2 * np.pi))),
        skin_mm=float(rng.uniform(1.3, 2.2)),
        muscle_keys=[m.key for m in atlas.muscles],
        muscles=mus,
        streak_angle=rng.uniform(0, np.pi, n),
        bones=bones,
        vessels=vessels,
        tendons=tendons,
        rotation_deg=float(rng.normal(0.0, 4.0)),
        fascia_level=float(rng.uniform(0.3, 0.55)),
        streak_level=float(rng.uniform(0.25, 0.5)),
        warp=float(rng.uniform(0.03, 0.05)),
        muscle_tone=np.clip(rng.normal(1.0, 0.035, n), 0.9, 1.1),
    )
    right = _perturb(base, rng, 1)
    left = _perturb(base, rng, 2)
    return right, left


def _perturb(base: LimbAnatomy, rng: np.random.Generator, field_seed: int) -> LimbAnatomy:
    """A limb's own small deviation from the subject's common anatomy."""
    limb = copy.deepcopy(base)
    n = len(limb.muscle_keys)
    s = float(rng.normal(1.0, 0.015))
    for k in ("a_lat", "a_med", "b_ant", "b_post"):
        limb.outline[k] = limb.outline[k] * s * float(rng.normal(1.0, 0.01))
    limb.outline["fat"] = limb.outline["fat"] * float(rng.normal(1.0, 0.05))
    limb.harmonics = limb.harmonics + rng.normal(0, 0.005, limb.harmonics.shape)
    limb.muscles["cu"] = limb.muscles["cu"] + rng.normal(0, 0.008, (n, 1))
    limb.muscles["cv"] = limb.muscles["cv"] + rng.normal(0, 0.008, (n, 1))
    for k in ("ax", "ay", "w"):
        limb.muscles[k] = limb.muscles[k] * rng.normal(1.0, 0.02, (n, 1))
    limb.rotation_deg = limb.rotation_deg + float(rng.normal(0.0, 2.5))
    limb.muscle_tone = limb.muscle_tone * rng.normal(1.0, 0.01, n)
    limb.field_seed = field_seed
    return limb


@dataclass
class LimbRender:
    """Rendered maps of one limb over a patch ``(nz, ny, nx)``."""

    tissue: np.ndarray  # uint8 tissue class
    muscle: np.ndarray  # int8 index into LimbAnatomy.muscle_keys, -1 where no muscle
    fat_fraction: np.ndarray  # float32 0..1 (fascia, septa, fatty replacement) inside muscle
    texture: np.ndarray  # float32 smooth zero-mean noise for within-tissue texture


def _z(values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Knots → per-slice values shaped (nz, 1, 1) float32."""
    return interpolate(values, t).astype(np.float32)[:, None, None]


def _side_scale(c: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return np.where(c >= 0, pos, neg)


def render_limb(
    limb: LimbAnatomy,
    t: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    side: int,
    seed: int,
    severities: np.ndarray | None = None,
    spacing_mm: float = 1.0,
    dz_mm: float = 5.0,
) -> LimbRender:
    """Render ``limb`` at levels ``t`` (nz,) on the grid ``ys`` (ny,) × ``xs`` (nx,) in mm from its centre.

    ``side`` is -1 for the right limb (lateral = -x, towards small column index) and +1 for the left.
    ``severities`` (n_muscles,) 0..1 replaces muscle by fat in patches (labels unchanged).
    """
    nz, ny, nx = len(t), len(ys), len(xs)
    shape = (nz, ny, nx)
    rng = np.random.default_rng([seed, limb.field_seed, 7])
    alpha = np.deg2rad(limb.rotation_deg)
    X = xs.astype(np.float32)[None, :]
    Y = ys.astype(np.float32)[:, None]
    lat = side * X  # mirror first, then rotate: both limbs turn the same way anatomically
    u2 = (np.cos(alpha) * lat + np.sin(alpha) * Y).astype(np.float32)  # lateral
    v2 = (-np.sin(alpha) * lat + np.cos(alpha) * Y).astype(np.float32)  # posterior
    r2 = np.hypot(u2, v2) + np.float32(1e-3)
    cos1, sin1 = u2 / r2, v2 / r2
    # outline: per-angle bumps and fat thickness (functions of the in-plane angle only)
    cos_k, sin_k = cos1, sin1
    bumps = np.zeros_like(u2)
    c2 = cos1 * cos1 - sin1 * sin1
    s2 = 2 * sin1 * cos1
    cos_k, sin_k = c2, s2
    for h in limb.harmonics:
        bumps += np.float32(h[0]) * cos_k + np.float32(h[1]) * sin_k
        cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1
    R = 1.0 + bumps
    fa, fdir = limb.fat_angle
    fat_ang = 1.0 + np.float32(fa) * (cos1 * np.float32(np.cos(fdir)) + sin1 * np.float32(np.sin(fdir)))

    o = {k: _z(v, t) for k, v in limb.outline.items()}
    inv_a = np.where(u2 >= 0, 1.0 / o["a_lat"], 1.0 / o["a_med"])
    inv_b = np.where(v2 >= 0, 1.0 / o["b_post"], 1.0 / o["b_ant"])
    un = u2 * inv_a
    vn = v2 * inv_b
    rho = np.hypot(un, vn) + np.float32(1e-4)
    mm_per_unit = r2 / rho
    depth = (R - rho) * mm_per_unit
    fat_t = o["fat"] * fat_ang
    shell = np.float32(limb.skin_mm) + fat_t
    rho_c = R - shell / mm_per_unit
    rho_c = np.maximum(rho_c, np.float32(0.05))
    um = un / rho_c
    vm = vn / rho_c

    tissue = np.zeros(shape, np.uint8)
    inside = depth > 0
    tissue[inside] = SKIN
    tissue[depth >= limb.skin_mm] = FAT
    comp = depth >= shell

    # smooth warp of the compartment coordinates: wavy, subject-specific fascia planes
    cell_xy = 14.0 / spacing_mm
    cell_z = max(30.0 / dz_mm, 1.0)
    um = um + np.float32(limb.warp) * smooth_field(rng, shape, (cell_z, cell_xy, cell_xy))
    vm = vm + np.float32(limb.warp) * smooth_field(rng, shape, (cell_z, cell_xy, cell_xy))

    # muscles: weighted elliptic Voronoi partition of the compartment
    m = limb.muscles
    best = np.full(shape, np.inf, np.float32)
    idx = np.full(shape, -1, np.int8)
    for i in range(len(limb.muscle_keys)):
        w = _z(m["w"][i], t)
        if float(w.max()) <= 1e-3:
            continue
        tilt = np.deg2rad(_z(m["tilt"][i], t))
        ct, st = np.cos(tilt), np.sin(tilt)
        du = um - _z(m["cu"][i], t)
        dv = vm - _z(m["cv"][i], t)
        p = (du * ct + dv * st) / _z(m["ax"][i], t)
        q = (dv * ct - du * st) / _z(m["ay"][i], t)
        score = (p * p + q * q) / np.maximum(w * w, np.float32(1e-6))
        better = score < best
        best = np.where(better, score, best)
        idx[better] = i
    in_muscle = comp & (best < np.float32(4.0))
    idx[~in_muscle] = -1
    tissue[comp] = FAT
    tissue[in_muscle] = MUSCLE

    # compartment half-axes in mm, to place bones and vessels given in compartment coordinates
    skin = np.float32(limb.skin_mm)
    half = {k: o[k] - skin - o["fat"] for k in ("a_lat", "a_med", "b_ant", "b_post")}

    def place(cu: np.ndarray, cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cu_z, cv_z = _z(cu, t), _z(cv, t)
        return (
            cu_z * _side_scale(cu_z, half["a_lat"], half["a_med"]),
            cv_z * _side_scale(cv_z, half["b_post"], half["b_ant"]),
        )

    # interosseous membrane (a fibrous sheet between two bones)
    bone_centres = {b.name: place(b.cu, b.cv) for b in limb.bones}
    if limb.atlas.membrane is not None:
        (ax_, ay_), (bx_, by_) = (bone_centres[n] for n in limb.atlas.membrane)
        ex, ey = bx_ - ax_, by_ - ay_
        seg2 = ex * ex + ey * ey
        s = np.clip(((u2 - ax_) * ex + (v2 - ay_) * ey) / seg2, 0.0, 1.0)
        d = np.hypot(u2 - ax_ - s * ex, v2 - ay_ - s * ey)
        sheet = comp & (d < np.float32(0.9))
        tissue[sheet] = FIBROUS
        idx[sheet] = -1

    for b in limb.bones:
        bu, bv = bone_centres[b.name]
        du = u2 - bu
        dv = v2 - bv
        db = np.hypot(du, dv) + np.float32(1e-3)
        radius = _z(b.radius_mm, t)
        shape_f = np.ones_like(db)
        if b.lobes == 3:
            c, s_ = du / db, dv / db
            c3 = 4 * c**3 - 3 * c
            s3 = 3 * s_ - 4 * s_**3
            ang = 3 * b.lobe_angle
            shape_f = 1.0 + np.float32(b.lobe_amp) * (c3 * np.float32(np.cos(ang)) + s3 * np.float32(np.sin(ang)))
        crest = b.crest_amp
        if crest > 0:
            shape_f = shape_f + np.float32(crest) * np.exp(np.float32(9.0) * (dv / db - 1.0))
        rb = radius * shape_f
        bone = db < rb
        marrow = db < rb - _z(b.cortex_mm, t) * shape_f
        tissue[bone] = CORTEX
        tissue[marrow] = MARROW
        idx[bone] = -1

    for td in limb.tendons:
        axz = _z(td["ax"], t)
        if float(axz.max()) <= 1e-3:
            continue
        p = (um - _z(td["cu"], t)) / np.maximum(axz, np.float32(1e-3))
        q = (vm - _z(td["cv"], t)) / _z(td["ay"], t)
        tendon = comp & (p * p + q * q < 1.0) & (axz > 0.02)
        tissue[tendon] = FIBROUS
        idx[tendon] = -1

    for v in limb.vessels:
        cu, cv = v.cu, v.cv
        r = np.float32(v.radius_mm)
        if float(np.hypot(cu, cv).max()) > 1.0:  # subcutaneous: in the middle of the fat layer
            cu_z, cv_z = _z(cu, t), _z(cv, t)
            nrm = np.hypot(cu_z, cv_z)
            ax_o = _side_scale(cu_z, o["a_lat"], o["a_med"])
            by_o = _side_scale(cv_z, o["b_post"], o["b_ant"])
            ru = 1.0 / np.sqrt((cu_z / nrm / ax_o) ** 2 + (cv_z / nrm / by_o) ** 2)
            depth_v = skin + np.maximum(o["fat"] * 0.5, r + 0.5)
            vu, vv = cu_z / nrm * (ru - depth_v), cv_z / nrm * (ru - depth_v)
        else:
            vu, vv = place(cu, cv)
        d2 = (u2 - vu) ** 2 + (v2 - vv) ** 2
        collar = inside & (d2 < (r + 0.9) ** 2) & (tissue != CORTEX) & (tissue != MARROW)
        tissue[collar & (tissue != SKIN)] = FAT
        idx[collar] = -1
        core = collar & (d2 < r * r)
        tissue[core] = NERVE if v.kind == "nerve" else VESSEL

    # fat fraction inside muscle: fascia lines, intramuscular septa, fatty replacement
    ff = np.zeros(shape, np.float32)
    texture = smooth_field(rng, shape, (1.0, 2.5 / spacing_mm, 2.5 / spacing_mm))
    boundary = np.zeros(shape, bool)
    a, b_ = idx[:, :-1, :], idx[:, 1:, :]
    boundary[:, :-1, :] |= (a != b_) & (a >= 0) & (b_ >= 0)
    a, b_ = idx[:, :, :-1], idx[:, :, 1:]
    boundary[:, :, :-1] |= (a != b_) & (a >= 0) & (b_ >= 0)
    ff[boundary] = np.float32(limb.fascia_level) * (0.75 + 0.25 * np.clip(texture[boundary], -1, 1))

    for i, key in enumerate(limb.muscle_keys):
        sel = idx == i
        if not sel.any():
            continue
        if limb.atlas.muscles[i].streak:
            g = float(limb.streak_angle[i])
            du = um - _z(m["cu"][i], t)
            dv = vm - _z(m["cv"][i], t)
            across = np.abs(du * np.float32(np.sin(g)) - dv * np.float32(np.cos(g))) * np.float32(40.0)
            along = np.abs(du * np.float32(np.cos(g)) + dv * np.float32(np.sin(g)))
            streak = sel & (across < np.float32(0.55)) & (along < _z(m["ax"][i], t) * 0.7)
            ff[streak] = np.maximum(ff[streak], np.float32(limb.streak_level))
        if severities is not None and key is not None and severities[i] > 0:
            sev = np.float32(severities[i])
            coarse = smooth_field(rng, shape, (1.5, 9.0 / spacing_mm, 9.0 / spacing_mm))[sel]
            fine = smooth_field(rng, shape, (1.0, 3.0 / spacing_mm, 3.0 / spacing_mm))[sel]
            # mottled ("moth-eaten") replacement: coarse patches broken up by finer streaks
            fat = np.clip(sev * (1.1 + 0.75 * coarse + 0.45 * fine), 0.0, 1.0)
            ff[sel] = np.maximum(ff[sel], fat)
    return LimbRender(tissue=tissue, muscle=idx, fat_fraction=ff, texture=texture)
