"""What a phantom is: the spec that fixes it (:class:`PhantomSpec`) and the result (:class:`Phantom`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from models.labels import muscles

Region = Literal["leg", "thigh"]
Contrast = Literal["pd", "t1", "t2fs"]
Limbs = Literal["both", "left", "right"]

REGIONS: tuple[str, ...] = ("leg", "thigh")
CONTRASTS: tuple[str, ...] = ("pd", "t1", "t2fs")
LIMBS: tuple[str, ...] = ("both", "left", "right")


def _check_infiltration(region: str, fat: Mapping[str, float]) -> None:
    keys = {m.key for m in muscles(region)}
    for name, severity in fat.items():
        base = name.removesuffix("_right").removesuffix("_left")
        if base not in keys:
            raise ValueError(
                f"fat infiltration names unknown muscle {name!r} for region {region!r}; "
                f"use one of {sorted(keys)} (optionally with _right or _left)"
            )
        if not 0.0 <= float(severity) <= 1.0:
            raise ValueError(f"fat infiltration severity of {name!r} must be within 0..1, got {severity}")


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that fixes one synthetic series; the same spec always gives the same bytes.

    Anatomy depends only on ``(region, seed)``: the PD and the T1 series of one seed show the same
    subject. ``None`` geometry fields are drawn from the seed (20-40 slices, matrix 256-432, 5-8 mm
    slices, ~1.04 mm pixels). ``fat_infiltration`` maps a muscle key (``soleus``, or ``soleus_left``
    for one side) to a severity 0..1. ``scanner`` names a :mod:`models.phantom.scanner` profile (another
    scanner and more realistic muscle); ``None`` is the default phantom.
    """

    region: Region
    contrast: Contrast
    seed: int
    limbs: Limbs = "both"
    n_slices: int | None = None
    matrix: int | None = None
    slice_thickness: float | None = None
    pixel_spacing: float | None = None
    snr: float = 30.0
    fat_infiltration: Mapping[str, float] = field(default_factory=dict)
    scanner: str | None = None

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {self.region!r}")
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {self.contrast!r}")
        if self.limbs not in LIMBS:
            raise ValueError(f"limbs must be one of {LIMBS}, got {self.limbs!r}")
        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.n_slices is not None and not 1 <= self.n_slices <= 400:
            raise ValueError(f"n_slices must be within 1..400, got {self.n_slices}")
        if self.matrix is not None and not 64 <= self.matrix <= 1024:
            raise ValueError(f"matrix must be within 64..1024, got {self.matrix}")
        if self.slice_thickness is not None and not 0.5 <= self.slice_thickness <= 20.0:
            raise ValueError(f"slice_thickness must be within 0.5..20 mm, got {self.slice_thickness}")
        if self.pixel_spacing is not None and not 0.2 <= self.pixel_spacing <= 4.0:
            raise ValueError(f"pixel_spacing must be within 0.2..4 mm, got {self.pixel_spacing}")
        if not self.snr > 0:
            raise ValueError(f"snr must be positive, got {self.snr}")
        _check_infiltration(self.region, self.fat_infiltration)
        if self.scanner is not None:
            from models.phantom.scanner import scanner_profile

            scanner_profile(self.scanner)  # raises, naming the known profiles
        frozen = MappingProxyType({str(k): float(v) for k, v in sorted(self.fat_infiltration.items())})
        object.__setattr__(self, "fat_infiltration", frozen)
        object.__setattr__(self, "seed", int(self.seed))

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhantomSpec) and self.key() == other.key()

    def key(self) -> tuple[object, ...]:
        """A hashable tuple of every field (fat infiltration as sorted pairs; the scanner only when set, so
        default specs keep their keys)."""
        base = (
            self.region,
            self.contrast,
            self.seed,
            self.limbs,
            self.n_slices,
            self.matrix,
            self.slice_thickness,
            self.pixel_spacing,
            self.snr,
            tuple(sorted(self.fat_infiltration.items())),
        )
        return base if self.scanner is None else (*base, self.scanner)

    def describe(self) -> str:
        """A short human description, e.g. ``leg t1 seed 42 both limbs``."""
        scanner = f" ({self.scanner} scanner)" if self.scanner else ""
        return f"{self.region} {self.contrast} seed {self.seed} {self.limbs} limbs{scanner}"

    def severity(self, muscle_key: str, side: str) -> float:
        """Fat infiltration severity of one muscle on one side (side-specific entry wins)."""
        fat = self.fat_infiltration
        return float(fat.get(f"{muscle_key}_{side}", fat.get(muscle_key, 0.0)))


@dataclass
class Phantom:
    """A generated SYNTHETIC series: image, ground-truth labels and geometry.

    ``image`` is float32 ``(z, y, x)`` in scanner-like units (written to DICOM as rounded uint16);
    ``labels`` is uint8 with values of :func:`models.labels.region_labels`; ``spacing`` is
    ``(dz, dy, dx)`` mm; ``origin`` is the patient ``(x, y, z)`` of voxel ``[0, 0, 0]``.
    ``tissue`` (uint8, classes of :data:`models.phantom.anatomy.TISSUE_NAMES`) tells what each voxel
    is made of, for tests and intensity statistics; ``acquisition`` holds the MR parameters.
    """

    image: np.ndarray
    labels: np.ndarray
    label_names: dict[int, str]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    spec: PhantomSpec
    acquisition: dict[str, object] = field(default_factory=dict)
    tissue: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size of the volume."""
        z, y, x = self.image.shape
        return int(z), int(y), int(x)

    def slice_positions(self) -> list[tuple[float, float, float]]:
        """ImagePositionPatient of every slice, index 0 first (most inferior)."""
        x0, y0, z0 = self.origin
        return [(x0, y0, z0 + k * self.spacing[0]) for k in range(self.shape[0])]
