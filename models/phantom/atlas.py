"""The parametric atlas: where each muscle, bone and vessel of one RIGHT limb lies, as a function of level.

Coordinates of a cross-section, viewed from the feet: ``u`` points LATERAL, ``v`` points POSTERIOR.
Muscles live in *compartment coordinates*: the deep fascia (the inner border of the subcutaneous fat)
is the unit circle, so an atlas position ``(0.6, -0.3)`` means "lateral, a bit anterior, well inside".

The level ``t`` runs along the segment: leg ``t=0`` ankle → ``t=1`` knee; thigh ``t=0`` knee → ``t=1``
hip. Every parameter is given at the five knots ``KNOTS`` (or as one constant) and interpolated smoothly,
so areas and shapes change smoothly from slice to slice. The left limb is the mirror image.

Each muscle is an ellipse (centre, semi-axes, tilt) with a weight; a point of the compartment belongs
to the muscle with the smallest weighted elliptic distance (a generalised Voronoi partition), which
gives touching muscles separated by curved fascia planes, as in real cross-sections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KNOTS: np.ndarray = np.array([0.0, 0.25, 0.5, 0.75, 1.0])

Knots = float | tuple[float, float, float, float, float]


@dataclass(frozen=True)
class MuscleDef:
    """One muscle of the atlas; ``key`` None marks an unlabelled muscle (real tissue, label 0)."""

    key: str | None
    cu: Knots
    cv: Knots
    ax: Knots
    ay: Knots
    weight: Knots = 1.0
    tilt_deg: Knots = 0.0
    streak: bool = False  # large muscle that carries an intramuscular fat septum


@dataclass(frozen=True)
class BoneDef:
    """A long bone: centre in compartment coordinates, radius and cortex in mm along the level."""

    name: str
    cu: Knots
    cv: Knots
    radius_mm: Knots
    cortex_mm: Knots
    lobes: int = 0  # 3 → triangular (tibia); 0 → round
    lobe_amp: float = 0.0
    lobe_angle_deg: float = -90.0  # direction of the first lobe (-90 = anterior crest)
    crest_amp: float = 0.0  # posterior ridge (linea aspera)


@dataclass(frozen=True)
class VesselDef:
    """A vessel or nerve: centre in compartment coordinates (|c| > 1: subcutaneous), radius in mm."""

    name: str
    cu: Knots
    cv: Knots
    radius_mm: float
    kind: str = "vessel"  # "vessel" or "nerve"


@dataclass(frozen=True)
class TendonDef:
    """A fibrous structure (tendon, aponeurosis) as an ellipse in compartment coordinates."""

    name: str
    cu: Knots
    cv: Knots
    ax: Knots
    ay: Knots


@dataclass(frozen=True)
class RegionAtlas:
    """The atlas of one region: outline sizes in mm and the structures inside."""

    region: str
    length_mm: float  # anatomical length covered by t in 0..1
    a_lat: Knots  # limb semi-axes (skin surface), mm, for a reference subject
    a_med: Knots
    b_ant: Knots
    b_post: Knots
    fat_mm: Knots  # reference subcutaneous fat thickness
    muscles: tuple[MuscleDef, ...]
    bones: tuple[BoneDef, ...]
    vessels: tuple[VesselDef, ...]
    tendons: tuple[TendonDef, ...]
    membrane: tuple[str, str] | None = None  # interosseous membrane between these bones


LEG = RegionAtlas(
    region="leg",
    length_mm=380.0,
    a_lat=(29.0, 41.0, 51.0, 57.0, 57.0),
    a_med=(29.0, 40.0, 51.0, 58.0, 58.0),
    b_ant=(29.0, 33.0, 36.0, 38.0, 40.0),
    b_post=(31.0, 47.0, 60.0, 68.0, 64.0),
    fat_mm=(6.0, 6.0, 6.5, 7.0, 7.5),
    muscles=(
        MuscleDef(
            "soleus",
            cu=(0.0, 0.02, 0.0, 0.0, 0.05),
            cv=(0.42, 0.45, 0.42, 0.40, 0.33),
            ax=(0.45, 0.66, 0.70, 0.64, 0.48),
            ay=(0.25, 0.30, 0.26, 0.22, 0.14),
            weight=(0.75, 1.0, 1.0, 0.95, 0.7),
            streak=True,
        ),
        MuscleDef(
            "gastrocnemius_medialis",
            cu=(-0.32, -0.36, -0.42, -0.46, -0.46),
            cv=(0.92, 0.84, 0.70, 0.60, 0.56),
            ax=(0.20, 0.26, 0.40, 0.44, 0.46),
            ay=(0.06, 0.10, 0.22, 0.28, 0.30),
            weight=(0.0, 0.35, 0.95, 1.1, 1.1),
            tilt_deg=(-30.0, -32.0, -36.0, -38.0, -36.0),
            streak=True,
        ),
        MuscleDef(
            "gastrocnemius_lateralis",
            cu=(0.28, 0.30, 0.32, 0.34, 0.36),
            cv=(0.92, 0.86, 0.76, 0.68, 0.62),
            ax=(0.15, 0.18, 0.28, 0.32, 0.34),
            ay=(0.05, 0.08, 0.16, 0.22, 0.24),
            weight=(0.0, 0.2, 0.85, 1.0, 1.05),
            tilt_deg=(25.0, 25.0, 22.0, 20.0, 15.0),
        ),
        MuscleDef(
            "tibialis_anterior",
            cu=(0.02, 0.05, 0.06, 0.06, 0.05),
            cv=(-0.62, -0.60, -0.58, -0.56, -0.55),
            ax=(0.17, 0.24, 0.28, 0.30, 0.29),
            ay=(0.17, 0.26, 0.31, 0.33, 0.31),
            weight=(0.7, 0.95, 1.0, 1.05, 1.0),
        ),
        MuscleDef(
            "extensor_digitorum_longus",
            cu=(0.34, 0.38, 0.40, 0.42, 0.44),
            cv=(-0.48, -0.46, -0.44, -0.42, -0.40),
            ax=(0.14, 0.15, 0.16, 0.17, 0.18),
            ay=(0.16, 0.20, 0.22, 0.22, 0.22),
            weight=(0.85, 0.95, 0.95, 0.95, 0.9),
            tilt_deg=20.0,
        ),
        MuscleDef(
            "peroneus",
            cu=(0.70, 0.74, 0.76, 0.77, 0.78),
            cv=(0.02, -0.02, -0.04, -0.05, -0.06),
            ax=(0.16, 0.17, 0.17, 0.17, 0.16),
            ay=(0.24, 0.30, 0.32, 0.32, 0.30),
            weight=(0.9, 1.0, 1.0, 0.95, 0.85),
            tilt_deg=15.0,
        ),
        # deep posterior compartment: tibialis posterior, flexor digitorum longus, flexor hallucis longus
        MuscleDef(
            None,
            cu=(0.06, 0.06, 0.08, 0.10, 0.12),
            cv=(0.14, 0.08, 0.06, 0.04, 0.02),
            ax=(0.42, 0.40, 0.36, 0.32, 0.28),
            ay=(0.20, 0.19, 0.18, 0.16, 0.14),
            weight=(1.0, 0.95, 0.9, 0.85, 0.8),
        ),
    ),
    bones=(
        BoneDef(
            "tibia",
            cu=(-0.30, -0.32, -0.34, -0.34, -0.30),
            cv=(-0.36, -0.46, -0.52, -0.52, -0.48),
            radius_mm=(15.0, 10.5, 9.8, 11.5, 17.0),
            cortex_mm=(2.0, 4.0, 4.4, 3.2, 1.8),
            lobes=3,
            lobe_amp=0.12,
        ),
        BoneDef(
            "fibula",
            cu=(0.55, 0.55, 0.56, 0.57, 0.56),
            cv=(-0.02, 0.04, 0.07, 0.08, 0.10),
            radius_mm=(7.0, 5.8, 5.8, 6.2, 7.5),
            cortex_mm=(2.0, 2.4, 2.4, 2.2, 1.8),
        ),
    ),
    vessels=(
        VesselDef("posterior_tibial", cu=-0.12, cv=0.18, radius_mm=2.6),
        VesselDef("tibial_nerve", cu=-0.06, cv=0.20, radius_mm=2.0, kind="nerve"),
        VesselDef("anterior_tibial", cu=0.18, cv=-0.24, radius_mm=2.0),
        VesselDef("peroneal", cu=0.40, cv=0.18, radius_mm=2.0),
        VesselDef("great_saphenous", cu=-1.08, cv=-0.30, radius_mm=2.2),
        VesselDef("small_saphenous", cu=0.0, cv=1.08, radius_mm=1.8),
    ),
    tendons=(
        TendonDef(
            "achilles_aponeurosis",
            cu=0.0,
            cv=(0.9, 0.93, 0.94, 0.94, 0.94),
            ax=(0.3, 0.34, 0.0, 0.0, 0.0),
            ay=(0.1, 0.05, 0.03, 0.03, 0.03),
        ),
    ),
    membrane=("tibia", "fibula"),
)

THIGH = RegionAtlas(
    region="thigh",
    length_mm=440.0,
    a_lat=(56.0, 66.0, 75.0, 83.0, 89.0),
    a_med=(58.0, 66.0, 74.0, 83.0, 89.0),
    b_ant=(50.0, 60.0, 67.0, 74.0, 79.0),
    b_post=(54.0, 64.0, 71.0, 79.0, 85.0),
    fat_mm=(10.0, 10.0, 11.0, 12.0, 13.0),
    muscles=(
        MuscleDef(
            "vastus_lateralis",
            cu=(0.52, 0.60, 0.62, 0.62, 0.60),
            cv=(-0.22, -0.16, -0.12, -0.10, -0.08),
            ax=(0.22, 0.25, 0.26, 0.26, 0.25),
            ay=(0.38, 0.42, 0.44, 0.44, 0.42),
            weight=(0.8, 0.95, 0.97, 0.97, 0.9),
            tilt_deg=15.0,
            streak=True,
        ),
        MuscleDef(
            "vastus_medialis",
            cu=(-0.40, -0.42, -0.40, -0.36, -0.32),
            cv=(-0.30, -0.38, -0.44, -0.48, -0.50),
            ax=(0.36, 0.32, 0.26, 0.20, 0.16),
            ay=(0.34, 0.32, 0.26, 0.20, 0.14),
            weight=(1.15, 1.1, 0.95, 0.75, 0.5),
            tilt_deg=-20.0,
        ),
        MuscleDef(
            "vastus_intermedius",
            cu=(0.14, 0.16, 0.18, 0.18, 0.16),
            cv=(-0.22, -0.22, -0.20, -0.20, -0.20),
            ax=(0.38, 0.42, 0.44, 0.44, 0.42),
            ay=(0.28, 0.32, 0.34, 0.34, 0.32),
            weight=(0.7, 1.05, 1.12, 1.12, 1.02),
        ),
        MuscleDef(
            "rectus_femoris",
            cu=(0.02, 0.02, 0.04, 0.06, 0.10),
            cv=(-0.82, -0.78, -0.74, -0.72, -0.70),
            ax=(0.10, 0.16, 0.20, 0.22, 0.22),
            ay=(0.08, 0.13, 0.16, 0.18, 0.18),
            weight=(0.2, 0.8, 1.0, 1.05, 1.05),
        ),
        MuscleDef(
            "sartorius",
            cu=(-0.82, -0.70, -0.52, -0.30, -0.02),
            cv=(0.22, -0.20, -0.58, -0.76, -0.82),
            ax=0.2,
            ay=0.115,
            weight=(0.9, 0.95, 1.0, 1.0, 1.0),
            tilt_deg=(-70.0, -55.0, -40.0, -25.0, -10.0),
        ),
        MuscleDef(
            "gracilis",
            cu=(-0.88, -0.90, -0.90, -0.88, -0.82),
            cv=(0.42, 0.34, 0.24, 0.14, 0.04),
            ax=(0.08, 0.09, 0.10, 0.11, 0.13),
            ay=(0.12, 0.14, 0.16, 0.18, 0.20),
            weight=(0.9, 0.9, 0.95, 0.95, 1.0),
            tilt_deg=10.0,
        ),
        MuscleDef(
            "adductor_magnus",
            cu=(-0.30, -0.30, -0.32, -0.34, -0.34),
            cv=(0.34, 0.32, 0.30, 0.28, 0.26),
            ax=(0.18, 0.26, 0.32, 0.36, 0.38),
            ay=(0.14, 0.22, 0.28, 0.32, 0.34),
            weight=(0.25, 0.78, 0.92, 0.97, 0.97),
            tilt_deg=-20.0,
            streak=True,
        ),
        MuscleDef(
            "adductor_longus",
            cu=(-0.46, -0.46, -0.48, -0.50, -0.48),
            cv=(-0.12, -0.12, -0.12, -0.14, -0.16),
            ax=(0.10, 0.12, 0.16, 0.22, 0.26),
            ay=(0.08, 0.09, 0.12, 0.15, 0.18),
            weight=(0.0, 0.0, 0.45, 0.95, 1.05),
            tilt_deg=-30.0,
        ),
        MuscleDef(
            "semimembranosus",
            cu=(-0.30, -0.32, -0.36, -0.38, -0.36),
            cv=(0.66, 0.68, 0.70, 0.72, 0.70),
            ax=(0.28, 0.27, 0.24, 0.19, 0.14),
            ay=(0.24, 0.23, 0.20, 0.15, 0.11),
            weight=(1.1, 1.08, 1.05, 0.85, 0.5),
        ),
        MuscleDef(
            "semitendinosus",
            cu=(-0.22, -0.18, -0.12, -0.08, -0.04),
            cv=(0.88, 0.88, 0.86, 0.84, 0.82),
            ax=(0.10, 0.16, 0.20, 0.22, 0.22),
            ay=(0.06, 0.10, 0.13, 0.15, 0.15),
            weight=(0.3, 0.8, 1.0, 1.05, 1.0),
        ),
        MuscleDef(
            "biceps_femoris_long",
            cu=(0.40, 0.36, 0.30, 0.24, 0.18),
            cv=(0.64, 0.68, 0.72, 0.74, 0.76),
            ax=(0.22, 0.25, 0.25, 0.23, 0.21),
            ay=(0.20, 0.22, 0.22, 0.21, 0.19),
            weight=(1.0, 1.05, 1.05, 1.0, 0.9),
            tilt_deg=25.0,
        ),
        MuscleDef(
            "biceps_femoris_short",
            cu=(0.48, 0.46, 0.44, 0.42, 0.40),
            cv=(0.36, 0.36, 0.34, 0.32, 0.30),
            ax=(0.18, 0.16, 0.10, 0.06, 0.04),
            ay=(0.16, 0.14, 0.08, 0.04, 0.03),
            weight=(1.0, 0.95, 0.5, 0.0, 0.0),
        ),
        # adductor brevis and pectineus near the hip: real muscle without a label
        MuscleDef(
            None,
            cu=(-0.22, -0.22, -0.24, -0.26, -0.28),
            cv=(0.02, 0.02, 0.02, 0.0, -0.02),
            ax=(0.10, 0.10, 0.12, 0.16, 0.20),
            ay=(0.08, 0.08, 0.10, 0.12, 0.14),
            weight=(0.0, 0.0, 0.0, 0.6, 0.95),
            tilt_deg=-30.0,
        ),
    ),
    bones=(
        BoneDef(
            "femur",
            cu=(0.06, 0.08, 0.10, 0.10, 0.12),
            cv=(0.02, -0.02, -0.02, -0.02, -0.04),
            radius_mm=(24.0, 15.0, 13.5, 14.0, 16.5),
            cortex_mm=(2.2, 5.0, 6.0, 5.5, 4.0),
            crest_amp=0.16,
        ),
    ),
    vessels=(
        VesselDef(
            "femoral_artery",
            cu=(-0.40, -0.44, -0.46, -0.40, -0.30),
            cv=(0.20, -0.08, -0.22, -0.30, -0.40),
            radius_mm=3.2,
        ),
        VesselDef(
            "femoral_vein",
            cu=(-0.38, -0.42, -0.44, -0.38, -0.26),
            cv=(0.28, 0.0, -0.14, -0.24, -0.32),
            radius_mm=3.8,
        ),
        VesselDef("deep_femoral", cu=-0.10, cv=(0.10, 0.08, 0.06, 0.04, 0.02), radius_mm=2.4),
        VesselDef("sciatic_nerve", cu=0.06, cv=(0.58, 0.56, 0.54, 0.52, 0.50), radius_mm=3.0, kind="nerve"),
        VesselDef("great_saphenous", cu=-1.07, cv=(0.32, 0.20, 0.05, -0.10, -0.25), radius_mm=2.5),
    ),
    tendons=(),
    membrane=None,
)

ATLASES: dict[str, RegionAtlas] = {"leg": LEG, "thigh": THIGH}


def knot_values(value: Knots) -> np.ndarray:
    """The five knot values of a parameter (a constant is repeated)."""
    arr = np.asarray(value, dtype=np.float64)
    return np.full(KNOTS.shape, float(arr)) if arr.ndim == 0 else arr


def interpolate(knots: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Smooth (monotone cubic) interpolation of knot values at levels ``t`` (clipped to 0..1)."""
    from scipy.interpolate import PchipInterpolator

    return np.asarray(PchipInterpolator(KNOTS, knots)(np.clip(t, 0.0, 1.0)), dtype=np.float64)
