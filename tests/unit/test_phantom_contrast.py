"""Contrast facts of the SYNTHETIC phantom: relative tissue intensities, noise, fatty replacement."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from models.labels import region_labels
from models.phantom import Phantom, PhantomSpec, generate
from models.phantom.anatomy import AIR, CORTEX, FAT, MARROW, MUSCLE


@cache
def phantom(
    region: str, contrast: str, seed: int = 21, snr: float = 30.0, fat: tuple[tuple[str, float], ...] = ()
) -> Phantom:
    spec = PhantomSpec(
        region,  # type: ignore[arg-type]
        contrast,  # type: ignore[arg-type]
        seed,
        n_slices=8,
        matrix=320 if region == "leg" else 432,
        snr=snr,
        fat_infiltration=dict(fat),
    )
    return generate(spec)


def core(mask: np.ndarray, px: int = 2) -> np.ndarray:
    """The mask eroded in-plane, away from partial-volume borders."""
    return ndimage.binary_erosion(mask, structure=np.ones((1, 2 * px + 1, 2 * px + 1), bool))


def median_of(ph: Phantom, tissue: int) -> float:
    assert ph.tissue is not None
    return float(np.median(ph.image[core(ph.tissue == tissue)]))


def muscle_median(ph: Phantom) -> float:
    return float(np.median(ph.image[core(ph.labels > 0)]))


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_t1_fat_very_bright_muscle_dark(region: str) -> None:
    ph = phantom(region, "t1")
    assert median_of(ph, FAT) > 2.5 * muscle_median(ph)
    assert median_of(ph, MARROW) > 2.5 * muscle_median(ph)


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_pd_fat_moderately_brighter_than_muscle(region: str) -> None:
    ph = phantom(region, "pd")
    ratio = median_of(ph, FAT) / muscle_median(ph)
    assert 1.3 < ratio < 2.5
    assert ratio < median_of(phantom(region, "t1"), FAT) / muscle_median(phantom(region, "t1"))


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_t2_fat_saturated_fat_darker_than_muscle(region: str) -> None:
    ph = phantom(region, "t2fs")
    assert median_of(ph, FAT) < 0.6 * muscle_median(ph)
    assert median_of(ph, MARROW) < 0.7 * muscle_median(ph)


@pytest.mark.parametrize("contrast", ["pd", "t1", "t2fs"])
def test_cortex_dark_on_every_contrast(contrast: str) -> None:
    ph = phantom("thigh", contrast)  # the femoral cortex is thick enough to have a core
    cortex = median_of(ph, CORTEX)
    assert cortex < 0.5 * muscle_median(ph)
    assert cortex < 0.5 * median_of(ph, MARROW) or contrast == "t2fs"


def test_contrasts_show_the_same_subject_with_different_intensities() -> None:
    pd, t1 = phantom("leg", "pd"), phantom("leg", "t1")
    assert np.array_equal(pd.labels, t1.labels)
    assert pd.tissue is not None and t1.tissue is not None
    assert np.array_equal(pd.tissue, t1.tissue)
    # muscle relative to fat differs enough that a PD-trained network meets a new contrast on T1
    rel_pd = muscle_median(pd) / median_of(pd, FAT)
    rel_t1 = muscle_median(t1) / median_of(t1, FAT)
    assert rel_pd - rel_t1 > 0.15


def test_background_noise_is_rician_at_the_requested_snr() -> None:
    for snr in (15.0, 40.0):
        ph = phantom("leg", "t1", snr=snr)
        assert ph.tissue is not None
        bg = ph.image[ph.tissue == AIR]
        sigma = float(ph.acquisition["noise_sigma"])  # type: ignore[arg-type]
        # Rayleigh background: mean = sigma * sqrt(pi / 2)
        assert abs(float(bg.mean()) / (sigma * np.sqrt(np.pi / 2)) - 1) < 0.1
        muscle = ph.image[core(ph.labels > 0, 3)]
        measured = float(np.median(muscle)) / sigma
        assert 0.6 * snr < measured < 1.6 * snr


def test_muscle_has_texture_but_is_smooth_at_large_scale() -> None:
    ph = phantom("leg", "t1", snr=1000.0)
    assert ph.tissue is not None
    sol = core(ph.labels == 1, 3)
    values = ph.image[sol]
    cv = float(values.std() / values.mean())
    assert 0.01 < cv < 0.25


def test_fatty_replacement_brightens_the_muscle_on_t1_but_keeps_its_label() -> None:
    healthy = phantom("leg", "t1")
    sick = phantom("leg", "t1", fat=(("soleus", 0.6),))
    assert np.array_equal(healthy.labels, sick.labels)
    soleus = [lab.value for lab in region_labels("leg") if lab.muscle.key == "soleus"]
    for v in soleus:
        m = core(healthy.labels == v)
        assert sick.image[m].mean() > 1.4 * healthy.image[m].mean()
    ta = core(healthy.labels == 4, 3)  # tibialis anterior, far from the soleus: unchanged
    assert abs(sick.image[ta].mean() / healthy.image[ta].mean() - 1) < 0.02


def test_fatty_replacement_is_patchy_and_graded() -> None:
    mild = phantom("leg", "t1", fat=(("soleus_right", 0.25),))
    severe = phantom("leg", "t1", fat=(("soleus_right", 0.75),))
    healthy = phantom("leg", "t1")
    m = core(healthy.labels == 1, 2)
    left = core(healthy.labels == 7, 2)
    means = [float(p.image[m].mean()) for p in (healthy, mild, severe)]
    assert means[0] < means[1] < means[2]
    assert abs(float(severe.image[left].mean()) / float(healthy.image[left].mean()) - 1) < 0.02
    spread = float(np.percentile(severe.image[m], 90) - np.percentile(severe.image[m], 10))
    assert spread > 2 * float(np.percentile(healthy.image[m], 90) - np.percentile(healthy.image[m], 10))


def test_fatty_replacement_darkens_the_muscle_on_t2_fat_sat() -> None:
    healthy = phantom("leg", "t2fs")
    sick = phantom("leg", "t2fs", fat=(("soleus", 0.7),))
    m = core(healthy.labels == 1)
    assert sick.image[m].mean() < 0.85 * healthy.image[m].mean()


def test_tissue_map_agrees_with_labels() -> None:
    ph = phantom("thigh", "pd")
    assert ph.tissue is not None
    assert (ph.tissue[ph.labels > 0] == MUSCLE).all()
    assert ((ph.tissue == MUSCLE) & (ph.labels == 0)).sum() < 0.2 * (ph.labels > 0).sum()  # unlabelled muscles
