"""Display colours of the muscles, chosen so that muscles that may touch can be told apart.

The node sends a colour per label value (the muscle catalogue's). Two muscles of one limb can lie side by side,
so every pair of one limb must differ by at least :data:`MIN_DELTA_E` in CIEDE2000 (a difference of about 2 is
just noticeable; 15 reads as "another colour" even at the overlay's half opacity). The catalogue's colour is
kept wherever it already does; a muscle too close to one listed before it gets the most distinct colour of a
fixed set of saturated candidates instead. The same muscle on the two sides keeps one colour (the limbs never
touch). Deterministic: the same catalogue always gives the same colours.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

from review_station.domain import Segment

log = logging.getLogger(__name__)

MIN_DELTA_E = 15.0
RGB = tuple[int, int, int]


def lab_of(colours: Sequence[Sequence[int]]) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB colours 0..255, shape ``(n, 3)``."""
    rgb = np.asarray(colours, dtype=np.float64).reshape(1, -1, 3) / 255.0
    return np.asarray(rgb2lab(rgb)[0])


def delta_e(a: Sequence[int], b: Sequence[int]) -> float:
    """CIEDE2000 colour difference of two sRGB colours."""
    la, lb = lab_of([a, b])
    return float(deltaE_ciede2000(la, lb))


def pairwise_delta_e(colours: Sequence[Sequence[int]]) -> np.ndarray:
    """Symmetric ``(n, n)`` matrix of CIEDE2000 differences (diagonal 0)."""
    lab = lab_of(colours)
    return np.asarray(deltaE_ciede2000(lab[:, None, :], lab[None, :, :], channel_axis=-1))


@lru_cache(maxsize=1)
def candidates() -> tuple[RGB, ...]:
    """Saturated colours every 10° of hue at two saturations and two values (144), visible over grey MR."""
    out = []
    for v in (1.0, 0.8):
        for s in (1.0, 0.65):
            for h in range(0, 360, 10):
                r, g, b = colorsys.hsv_to_rgb(h / 360.0, s, v)
                out.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(out)


def _limb(s: Segment) -> str:
    if s.side:
        return s.side
    for side in ("right", "left"):
        if s.key.endswith(f"_{side}"):
            return side
    return ""


def distinct_colours(segments: Sequence[Segment], min_delta: float = MIN_DELTA_E) -> list[Segment]:
    """``segments`` with colours such that every pair of one limb differs by ``min_delta`` or more."""
    by_muscle: dict[str, RGB] = {}  # the chosen colour of a muscle (key without the side), shared by sides
    out: list[Segment] = []
    limbs: dict[str, list[RGB]] = {}
    originals: dict[str, list[RGB]] = {}
    for s in segments:
        originals.setdefault(_limb(s), []).append(s.colour)
    for s in segments:
        limb = _limb(s)
        placed = limbs.setdefault(limb, [])
        muscle = s.key.removesuffix(f"_{limb}") if limb else s.key
        colour = by_muscle.get(muscle, s.colour)
        if placed and min(delta_e(colour, c) for c in placed) < min_delta:
            colour = _most_distinct(placed, [c for c in originals[limb] if c != s.colour])
            log.info("display colour of %s changed to %s (too close to a neighbour)", s.key, colour)
        by_muscle.setdefault(muscle, colour)
        placed.append(colour)
        out.append(s if colour == s.colour else replace(s, colour=colour))
    return out


def _min_delta_e(lab_a: np.ndarray, colours: Sequence[RGB]) -> np.ndarray:
    """For each row of ``lab_a``, its smallest CIEDE2000 difference to ``colours`` (100 when there are none)."""
    if not colours:
        return np.full(len(lab_a), 100.0)
    lab_b = lab_of(colours)
    d = deltaE_ciede2000(lab_a[:, None, :], lab_b[None, :, :], channel_axis=-1)
    return np.asarray(d).min(axis=1)


def _most_distinct(placed: Sequence[RGB], others: Sequence[RGB]) -> RGB:
    """The candidate farthest (worst case) from the colours placed, then from the colours still to come."""
    cands = candidates()
    lab_c = lab_of(cands)
    d_placed = _min_delta_e(lab_c, placed)
    d_all = np.minimum(d_placed, _min_delta_e(lab_c, others))
    best = max(range(len(cands)), key=lambda i: (float(d_all[i]), float(d_placed[i]), -i))
    return cands[best]
