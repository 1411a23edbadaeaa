"""Helpers for the model tests: small synthetic both-limb volumes and a tiny, fast model package."""

from __future__ import annotations

import functools

import numpy as np

TINY_SPEC = {"spacing": [3.0, 3.0], "patch": [48, 48]}
TINY_NETWORK = {"base_filters": 4, "levels": 3}
SPACING = (5.0, 1.0, 1.0)


def synthetic_limbs(
    n_slices: int = 6, size: int = 160, seed: int = 0, limbs: str = "both", gap: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """A both-limb (or one-limb) volume: discs of fat with six muscle wedges inside, leg labels
    (right 1..6 at small x, left 7..12 mirrored), Rician-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    vol = np.zeros((n_slices, size, size), np.float32)
    lab = np.zeros((n_slices, size, size), np.uint8)
    radius = size * 0.2
    centres = {"right": size / 2 - radius - gap / 2, "left": size / 2 + radius + gap / 2}
    for side, cx in centres.items():
        if limbs not in ("both", side):
            continue
        cy = size / 2
        dist = np.hypot(yy - cy, xx - cx) / radius
        mirror = 1.0 if side == "right" else -1.0
        angle = np.arctan2(yy - cy, mirror * (xx - cx))
        wedge = ((angle + np.pi) / (2 * np.pi) * 6).astype(int) % 6
        muscle = dist < 0.75
        vol[:, dist < 1.0] = 900.0
        for k in range(6):
            sel = muscle & (wedge == k)
            vol[:, sel] = 250.0 + 60.0 * k
            lab[:, sel] = k + 1 + (0 if side == "right" else 6)
    vol += rng.normal(0.0, 15.0, vol.shape).astype(np.float32)
    return np.abs(vol), lab


@functools.lru_cache(maxsize=4)
def _tiny(region: str, seed: int) -> object:
    from models.package import create

    return create(region, f"tiny-{region}", input_spec=TINY_SPEC, network=TINY_NETWORK, seed=seed)


def tiny_package(region: str = "leg", seed: int = 0):  # type: ignore[no-untyped-def]
    """A version-0 package with a ~10k-parameter network (built once per process)."""
    return _tiny(region, seed)
