"""Anatomy facts of the SYNTHETIC phantom: labels, neighbours, positions, bones, mirroring, smoothness."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from models.labels import label_names, muscles, region_labels
from models.phantom import Phantom, PhantomSpec, generate
from models.phantom.anatomy import AIR, CORTEX, MARROW, MUSCLE


@cache
def phantom(region: str, limbs: str = "both", seed: int = 11, slices: int = 30, thickness: float = 8.0) -> Phantom:
    spec = PhantomSpec(
        region,  # type: ignore[arg-type]
        "t1",
        seed,
        limbs=limbs,  # type: ignore[arg-type]
        n_slices=slices,
        slice_thickness=thickness,
        matrix=320 if region == "leg" else 432,
    )
    return generate(spec)


def value(region: str, key: str, side: str = "right") -> int:
    return next(lab.value for lab in region_labels(region) if lab.muscle.key == key and lab.side == side)


def touches(labels: np.ndarray, a: int, b: int) -> bool:
    """Whether label a and label b share an in-plane border in some slice."""
    ma = labels == a
    grown = ndimage.binary_dilation(ma, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    return bool((grown & (labels == b)).any())


def centroid(mask: np.ndarray) -> np.ndarray:
    """(z, y, x) centroid of a mask in voxels."""
    return np.array(ndimage.center_of_mass(mask))


def limb_frame(ph: Phantom, side: str, mask: np.ndarray) -> tuple[float, float]:
    """(lateral, posterior) mm of a mask's centroid relative to its limb's muscle centroid."""
    n = len(muscles(ph.spec.region))
    lo = 1 if side == "right" else n + 1
    limb = (ph.labels >= lo) & (ph.labels < lo + n)
    _, cy, cx = centroid(limb)
    _, my, mx = centroid(mask)
    lateral = (cx - mx) if side == "right" else (mx - cx)  # right limb: lateral is towards small x
    return float(lateral * ph.spacing[2]), float((my - cy) * ph.spacing[1])


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_label_values_and_names_match_the_catalogue(region: str) -> None:
    ph = phantom(region)
    n = len(muscles(region))
    assert n == {"leg": 6, "thigh": 12}[region]
    assert ph.label_names == label_names(region)
    present = set(np.unique(ph.labels).tolist()) - {0}
    assert present == set(range(1, 2 * n + 1))
    assert ph.labels.dtype == np.uint8 and ph.image.dtype == np.float32
    assert ph.labels.shape == ph.image.shape


def test_right_limb_lies_at_small_column_index() -> None:
    ph = phantom("leg")
    n = 6
    right = np.nonzero((ph.labels >= 1) & (ph.labels <= n))[2]
    left = np.nonzero(ph.labels > n)[2]
    assert right.max() < left.min()
    assert right.mean() < ph.shape[2] / 2 < left.mean()


@pytest.mark.parametrize(
    ("region", "pairs"),
    [
        (
            "leg",
            [
                ("soleus", "gastrocnemius_medialis"),
                ("soleus", "gastrocnemius_lateralis"),
                ("gastrocnemius_medialis", "gastrocnemius_lateralis"),
                ("tibialis_anterior", "extensor_digitorum_longus"),
                ("extensor_digitorum_longus", "peroneus"),
            ],
        ),
        (
            "thigh",
            [
                ("vastus_lateralis", "vastus_intermedius"),
                ("vastus_intermedius", "rectus_femoris"),
                ("vastus_medialis", "vastus_intermedius"),
                ("semimembranosus", "semitendinosus"),
                ("adductor_magnus", "semimembranosus"),
                ("biceps_femoris_long", "semitendinosus"),
                ("sartorius", "vastus_medialis"),
            ],
        ),
    ],
)
def test_neighbouring_muscles_touch(region: str, pairs: list[tuple[str, str]]) -> None:
    ph = phantom(region)
    for side in ("right", "left"):
        for a, b in pairs:
            assert touches(ph.labels, value(region, a, side), value(region, b, side)), (side, a, b)


@pytest.mark.parametrize(
    ("region", "pairs"),
    [
        (
            "leg",
            [
                ("tibialis_anterior", "gastrocnemius_medialis"),
                ("tibialis_anterior", "gastrocnemius_lateralis"),
            ],
        ),
        ("thigh", [("rectus_femoris", "biceps_femoris_long"), ("gracilis", "vastus_lateralis")]),
    ],
)
def test_distant_muscles_do_not_touch(region: str, pairs: list[tuple[str, str]]) -> None:
    ph = phantom(region)
    for a, b in pairs:
        assert not touches(ph.labels, value(region, a), value(region, b)), (a, b)


def test_leg_muscles_sit_where_anatomy_puts_them() -> None:
    ph = phantom("leg")
    for side in ("right", "left"):
        pos = {m.key: limb_frame(ph, side, ph.labels == value("leg", m.key, side)) for m in muscles("leg")}
        lat = {k: v[0] for k, v in pos.items()}
        post = {k: v[1] for k, v in pos.items()}
        assert post["tibialis_anterior"] < post["soleus"] < post["gastrocnemius_medialis"]
        assert post["extensor_digitorum_longus"] < post["peroneus"] < post["soleus"] + 5
        assert lat["tibialis_anterior"] < lat["extensor_digitorum_longus"] < lat["peroneus"]
        assert lat["gastrocnemius_medialis"] < 0 < lat["gastrocnemius_lateralis"]
        assert lat["peroneus"] > 15


def test_thigh_muscles_sit_where_anatomy_puts_them() -> None:
    ph = phantom("thigh")
    for side in ("right", "left"):
        pos = {m.key: limb_frame(ph, side, ph.labels == value("thigh", m.key, side)) for m in muscles("thigh")}
        lat = {k: v[0] for k, v in pos.items()}
        post = {k: v[1] for k, v in pos.items()}
        assert post["rectus_femoris"] < post["vastus_intermedius"] < post["adductor_magnus"]
        for ham in ("semimembranosus", "semitendinosus", "biceps_femoris_long"):
            assert post[ham] > post["vastus_intermedius"] + 20
        assert lat["vastus_lateralis"] > 20 > lat["vastus_medialis"]
        assert lat["gracilis"] < lat["adductor_magnus"] < lat["biceps_femoris_long"]
        assert lat["semimembranosus"] < lat["biceps_femoris_long"]
        assert lat["vastus_lateralis"] == max(lat.values())
        assert lat["gracilis"] == min(lat.values())


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_bones_lie_inside_the_limb_and_labels_inside_the_skin(region: str) -> None:
    ph = phantom(region)
    assert ph.tissue is not None
    air = ph.tissue == AIR
    near_air = ndimage.binary_dilation(air, structure=np.ones((1, 5, 5), bool))  # within 2 voxels of air
    bone = (ph.tissue == CORTEX) | (ph.tissue == MARROW)
    assert bone.any()
    assert not (bone & near_air).any()
    assert not ((ph.labels > 0) & near_air).any()
    assert (ph.tissue[ph.labels > 0] == MUSCLE).all()
    # marrow is enclosed by cortex: no marrow voxel borders muscle or fat directly
    grown = ndimage.binary_dilation(ph.tissue == MARROW, structure=np.ones((1, 3, 3), bool))
    assert set(np.unique(ph.tissue[grown]).tolist()) <= {CORTEX, MARROW}


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_left_limb_mirrors_the_right(region: str) -> None:
    ph = phantom(region)
    n = len(muscles(region))
    for m in muscles(region):
        r = ph.labels == value(region, m.key, "right")
        lft = ph.labels == value(region, m.key, "left")
        ar, al = r.sum(), lft.sum()
        assert 0.7 < al / ar < 1.4, (m.key, ar, al)
        lr, pr = limb_frame(ph, "right", r)
        ll, pl = limb_frame(ph, "left", lft)
        assert abs(lr - ll) < 12 and abs(pr - pl) < 12, (m.key, (lr, pr), (ll, pl))
    # and the whole-limb masks, flipped left-right and aligned, overlap strongly
    right = (ph.labels >= 1) & (ph.labels <= n)
    left = ph.labels > n
    flipped = left[:, :, ::-1]
    shift = np.round(centroid(right) - centroid(flipped)).astype(int)
    aligned = np.roll(flipped, tuple(shift[1:]), axis=(1, 2))
    dice = 2 * (aligned & right).sum() / (aligned.sum() + right.sum())
    assert dice > 0.8


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_anatomy_changes_smoothly_along_the_limb(region: str) -> None:
    ph = phantom(region, slices=40, thickness=5.0)
    for m in muscles(region):
        area = (ph.labels == value(region, m.key)).sum(axis=(1, 2)).astype(float)
        step = np.abs(np.diff(area)).max()
        assert step <= 0.2 * area.max() + 20, (m.key, step, area.max())


def test_gastrocnemius_thins_distally_while_soleus_persists() -> None:
    ph = phantom("leg", slices=40, thickness=8.0)  # covers most of the leg
    gm = (ph.labels == value("leg", "gastrocnemius_medialis")).sum(axis=(1, 2))
    sol = (ph.labels == value("leg", "soleus")).sum(axis=(1, 2))
    assert gm[0] < 0.15 * gm.max()  # slice 0 is the most inferior
    assert sol[0] > 0.15 * sol.max()
    assert gm[0] / gm.max() < 0.5 * sol[0] / sol.max()


def test_biceps_short_head_only_distally_and_adductor_longus_proximally() -> None:
    ph = phantom("thigh", slices=40, thickness=9.0)
    bfs = (ph.labels == value("thigh", "biceps_femoris_short")).sum(axis=(1, 2))
    al = (ph.labels == value("thigh", "adductor_longus")).sum(axis=(1, 2))
    assert bfs[0] > 0 and bfs[-1] == 0
    assert al[0] == 0 and al[-1] > 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_one_limb_only(side: str) -> None:
    ph = phantom("thigh", limbs=side, slices=6, thickness=6.0)
    expected = {lab.value for lab in region_labels("thigh") if lab.side == side}
    assert set(np.unique(ph.labels).tolist()) - {0} == expected
    assert set(ph.label_names) == expected
    # the same subject: its muscles have about the areas of that limb in the both-limb series
    both = phantom("thigh", limbs="both", slices=6, thickness=6.0)
    px, px_both = ph.spacing[1] * ph.spacing[2], both.spacing[1] * both.spacing[2]
    total = np.isin(ph.labels, list(expected)).sum() * px
    total_both = np.isin(both.labels, list(expected)).sum() * px_both
    assert 0.95 < total / total_both < 1.05
    for v in expected:
        a, b = (ph.labels == v).sum() * px, (both.labels == v).sum() * px_both
        assert 0.7 < a / b < 1.4, (v, a, b)
