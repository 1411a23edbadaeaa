"""Scanner and realism profiles: make a SYNTHETIC cohort look like another scanner and real muscle.

The default phantom draws every fascia as a bright line and muscle as nearly uniform tissue, which makes
it easy to segment. A :class:`ScannerProfile` (named by ``PhantomSpec.scanner``) changes what a second
site would see of the same subject (anatomy drawn from the seed; muscle borders move a little because the
wavy fascia planes are drawn on the finer through-slice sampling):

- fascia barely visible (their fat fraction scaled down),
- intramuscular fat streaks and a coarser, stronger muscle texture (marbling),
- diffuse fat infiltration that varies per subject and per muscle,
- partial volume across the slice thickness (each slice averages sub-slices through the slab),
- a blurrier in-plane point spread, a different receive coil (stronger bias field with an
  anterior-posterior fall-off) and a lower SNR,
- its own relative tissue signals (another T1 sequence).

Default phantoms (``scanner=None``) are unchanged, so the shipped zoo, trained on them, needs no retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.phantom.anatomy import FAT, MUSCLE, SKIN, LimbAnatomy
from models.phantom.contrast import ContrastModel
from models.phantom.noise import smooth_field


@dataclass(frozen=True)
class ScannerProfile:
    """How a scanner and its patients differ from the default phantom (see the module docstring)."""

    name: str
    description: str
    coil_name: str
    fascia_scale: float  # multiplies the drawn fascia fat fraction (1 = default)
    streak_fraction: float  # share of muscle voxels inside fat streaks
    streak_level: float  # fat fraction of a streak
    marbling: float  # amplitude of fine intramuscular fat mottling (fat fraction)
    diffuse_fat: tuple[float, float]  # range of a muscle's diffuse fat fraction (scaled per subject)
    texture_scale: float  # multiplies the contrast's muscle texture amplitude
    sub_slices: int  # partial volume: sub-slices averaged through each slice's thickness
    blur_px: float  # in-plane Gaussian blur (pixels) of the point spread
    bias_strength: float  # receive-coil unevenness (replaces the contrast's)
    ap_falloff: float  # extra linear signal fall-off from anterior to posterior (fraction)
    snr_factor: float  # multiplies the spec's SNR
    signal: dict[str, dict[int, float]] = field(default_factory=dict)  # contrast → tissue signal overrides

    def contrast_model(self, base: ContrastModel) -> ContrastModel:
        """The contrast as this scanner renders it: its own tissue signals, texture and bias strength."""
        return ContrastModel(
            name=base.name,
            signal={**base.signal, **self.signal.get(base.name, {})},
            muscle_texture=base.muscle_texture * self.texture_scale,
            fat_texture=base.fat_texture,
            bias_strength=self.bias_strength,
        )

    def adjust_limb(self, limb: LimbAnatomy) -> LimbAnatomy:
        """The limb with fascia this scanner barely shows (anatomy unchanged)."""
        limb.fascia_level = float(limb.fascia_level * self.fascia_scale)
        return limb

    def sub_levels(self, levels: np.ndarray, dz_mm: float, length_mm: float) -> np.ndarray:
        """Anatomical levels of the sub-slices of every slice (``len(levels) * sub_slices``), slice-major."""
        k = self.sub_slices
        offsets = (np.arange(k) - (k - 1) / 2) / k * dz_mm / length_mm
        return (levels[:, None] + offsets[None, :]).ravel()

    def fat_in_muscle(
        self,
        rng: np.random.Generator,
        tissue: np.ndarray,
        muscle: np.ndarray,
        fat_fraction: np.ndarray,
        spacing_mm: float,
        dz_mm: float,
    ) -> np.ndarray:
        """``fat_fraction`` with diffuse infiltration, streaks and marbling added inside muscle."""
        shape = tissue.shape
        is_muscle = tissue == MUSCLE
        if not is_muscle.any():
            return fat_fraction
        n_muscles = int(muscle.max()) + 1
        subject = float(rng.lognormal(0.0, 0.5))
        lo, hi = self.diffuse_fat
        per_muscle = np.clip(rng.uniform(lo, hi, max(n_muscles, 1)) * subject, 0.0, 0.6).astype(np.float32)
        ff = fat_fraction.copy()
        cell_z = max(12.0 / dz_mm, 1.0)
        coarse = smooth_field(rng, shape, (cell_z, 12.0 / spacing_mm, 12.0 / spacing_mm))
        diffuse = per_muscle[np.clip(muscle, 0, None).astype(np.int64)] * np.clip(1.0 + 0.6 * coarse, 0.2, 2.0)
        # streaks: thresholded noise, long along one in-plane axis and thin along the other (both orientations)
        along_x = smooth_field(rng, shape, (cell_z, 0.9 / spacing_mm, 7.0 / spacing_mm))
        along_y = smooth_field(rng, shape, (cell_z, 7.0 / spacing_mm, 0.9 / spacing_mm))
        threshold = float(np.quantile(along_x[is_muscle], 1.0 - self.streak_fraction / 2))
        streak = (along_x > threshold) | (along_y > threshold)
        fine = smooth_field(rng, shape, (1.0, 1.6 / spacing_mm, 1.6 / spacing_mm))
        marbling = self.marbling * np.clip(fine, 0.0, None)
        extra = diffuse + marbling + np.where(streak, np.float32(self.streak_level), np.float32(0.0))
        ff[is_muscle] = np.clip(np.maximum(ff[is_muscle], 0.0) + extra[is_muscle], 0.0, 1.0)
        return ff

    def ap_field(self, ny: int, rng: np.random.Generator) -> np.ndarray:
        """A linear anterior→posterior sensitivity ramp ``(ny, 1)``, mean 1 (a posterior coil far away)."""
        ramp = np.linspace(1.0, 1.0 - self.ap_falloff * float(rng.uniform(0.7, 1.3)), ny, dtype=np.float32)
        return (ramp / ramp.mean())[:, None]


SCANNERS: dict[str, ScannerProfile] = {
    "site_b": ScannerProfile(
        name="site_b",
        description="another vendor's T1 TSE with a flexible 4-channel coil; patients with fatty, marbled muscle",
        coil_name="SYNTH_FLEX_4CH",
        fascia_scale=0.12,
        streak_fraction=0.08,
        streak_level=0.4,
        marbling=0.1,
        diffuse_fat=(0.02, 0.12),
        texture_scale=2.5,
        sub_slices=3,
        blur_px=1.1,
        bias_strength=0.5,
        ap_falloff=0.35,
        snr_factor=0.55,
        signal={"t1": {SKIN: 0.5, FAT: 1.0, MUSCLE: 0.34}},
    ),
}


def scanner_profile(name: str) -> ScannerProfile:
    """The profile called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SCANNERS[name]
    except KeyError:
        raise ValueError(f"unknown scanner profile {name!r}; known: {', '.join(SCANNERS)}") from None
