"""Random fields: smooth noise (texture, warps, patchy fat), the coil bias field and Rician noise."""

from __future__ import annotations

import numpy as np


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cell: tuple[float, ...]) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise of ``shape``; ``cell`` is the correlation length in voxels.

    A coarse Gaussian grid (one value per cell) is interpolated up to ``shape`` with smoothstep weights,
    axis by axis: cheap, and free of visible creases once the grid has been lightly low-pass filtered.
    """
    from scipy import ndimage

    coarse_shape = tuple(max(2, int(np.ceil(n / max(c, 1.0))) + 2) for n, c in zip(shape, cell, strict=True))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    sig = tuple(0.7 if s > 3 else 0.0 for s in coarse_shape)
    coarse = ndimage.gaussian_filter(coarse, sig, mode="wrap")
    std = float(coarse.std()) or 1.0
    coarse /= std
    factors = tuple((n + 2 * max(c, 1.0)) / (k - 1) for n, c, k in zip(shape, cell, coarse_shape, strict=True))
    # sample the coarse grid at voxel centres, offset one cell in, so every voxel interpolates inside
    coords = [
        np.arange(n, dtype=np.float32) / f + max(c, 1.0) / f for n, f, c in zip(shape, factors, cell, strict=True)
    ]
    return _separable_linear(coarse, coords)


def _separable_linear(coarse: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Smoothstep interpolation of ``coarse`` at the outer product of 1-D coordinates, axis by axis."""
    out = coarse
    for axis, c in enumerate(coords):
        i0 = np.clip(np.floor(c).astype(np.int64), 0, out.shape[axis] - 2)
        w = (c - i0).astype(np.float32)
        w = w * w * (3.0 - 2.0 * w)  # smoothstep: no visible creases at the coarse grid lines
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i0 + 1, axis=axis)
        shape = [1] * out.ndim
        shape[axis] = len(c)
        w = w.reshape(shape)
        out = a + (b - a) * w
    return np.ascontiguousarray(out, dtype=np.float32)


def coil_bias(
    rng: np.random.Generator, nz: int, ny: int, nx: int, spacing: tuple[float, float, float], strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth receive-coil sensitivity: ``(bias_z (nz,), bias_yx (ny, nx))``, product ≈ 1 on average.

    Modelled as a few broad Gaussian lobes (coil elements) around the field of view plus a slow
    variation along z; ``strength`` ~0.1-0.4 sets how uneven it is.
    """
    dz, dy, dx = spacing
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * dy
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * dx
    half = max(ny * dy, nx * dx) / 2
    field = np.full((ny, nx), 1.0 - strength, dtype=np.float32)
    n_lobes = int(rng.integers(3, 6))
    for _ in range(n_lobes):
        angle = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(0.5, 0.9) * half
        cy, cx = r * np.sin(angle), r * np.cos(angle)
        width = rng.uniform(0.5, 0.9) * half
        amp = strength * rng.uniform(0.4, 1.0) * 2.0 / n_lobes
        gy = np.exp(-((y - cy) ** 2) / (2 * width**2))
        gx = np.exp(-((x - cx) ** 2) / (2 * width**2))
        field += amp * np.outer(gy, gx).astype(np.float32) * 2.0
    field /= float(field.mean())
    z = (np.arange(nz, dtype=np.float32) - (nz - 1) / 2) * dz
    slope = rng.uniform(-0.25, 0.25) * strength / max(nz * dz / 2, 1.0)
    curve = rng.uniform(-0.3, 0.0) * strength / max((nz * dz / 2) ** 2, 1.0)
    bias_z = (1.0 + slope * z + curve * z**2).astype(np.float32)
    return bias_z, field


def add_rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of std ``sigma`` per channel (in place-ish)."""
    real = rng.standard_normal(image.shape, dtype=np.float32)
    real *= sigma
    real += image
    imag = rng.standard_normal(image.shape, dtype=np.float32)
    imag *= sigma
    np.multiply(real, real, out=real)
    np.multiply(imag, imag, out=imag)
    real += imag
    return np.sqrt(real, out=real)
