"""Muscle colours (CIEDE2000 between muscles that can touch) and the numpy side of the review tools:
smoothing, locked muscles, per-muscle opacity, the difference hatch, Dice per muscle, window presets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000

from review_station import render, stats, tools
from review_station.domain import Segment, default_segments
from review_station.editing import EditSession
from review_station.palette import MIN_DELTA_E, delta_e, distinct_colours, pairwise_delta_e


def catalogue(region: str) -> list[Segment]:
    """The segments the node sends for a model of ``region`` (both limbs), from the muscle catalogue."""
    from models.labels import region_labels

    return [Segment(lab.value, lab.key, lab.display_name, lab.muscle.colour, lab.side) for lab in region_labels(region)]


def touching_pairs(region: str, seeds: tuple[int, ...] = (0, 1)) -> set[tuple[int, int]]:
    """Label values that share an in-plane edge somewhere in SYNTHETIC phantoms of ``region``."""
    from models.phantom import PhantomSpec, generate

    pairs: set[tuple[int, int]] = set()
    for seed in seeds:
        lab = generate(PhantomSpec(region=region, contrast="pd", seed=seed, n_slices=12, matrix=256)).labels  # type: ignore[arg-type]
        for axis in (1, 2):
            a, b = np.moveaxis(lab, axis, 0)[1:], np.moveaxis(lab, axis, 0)[:-1]
            m = (a != b) & (a > 0) & (b > 0)
            pairs |= {(int(min(p, q)), int(max(p, q))) for p, q in zip(a[m], b[m], strict=True)}
    return pairs


def test_ciede2000_matches_the_published_reference_values() -> None:
    """Sharma, Wu & Dalal (2005), test pairs 1, 7 and 17: the formula the palette relies on."""
    pairs = [
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ]
    for lab1, lab2, expected in pairs:
        assert float(deltaE_ciede2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)
    assert delta_e((255, 0, 0), (255, 0, 0)) == pytest.approx(0.0, abs=1e-9)
    assert delta_e((0, 0, 0), (255, 255, 255)) == pytest.approx(100.0, abs=0.01)


@pytest.mark.parametrize("region", ["leg", "thigh"])
def test_muscles_that_can_touch_are_told_apart(region: str) -> None:
    given = {s.value: s for s in catalogue(region)}
    shown = {s.value: s for s in distinct_colours(given.values())}
    for side in ("right", "left"):
        colours = [s.colour for s in shown.values() if s.side == side]
        d = pairwise_delta_e(colours)
        worst = min(d[i, j] for i, j in itertools.combinations(range(len(colours)), 2))
        assert worst >= MIN_DELTA_E, f"{region} {side}: two muscles only {worst:.1f} apart (CIEDE2000)"
    touching = touching_pairs(region)
    assert len(touching) >= 10  # the phantom has real neighbours
    for p, q in touching:
        d = delta_e(shown[p].colour, shown[q].colour)
        assert d >= MIN_DELTA_E, f"{shown[p].name} and {shown[q].name} touch but differ by {d:.1f} only"
    worst_given = min(delta_e(given[p].colour, given[q].colour) for p, q in touching)
    assert worst_given >= MIN_DELTA_E  # the catalogue itself (what the SEG carries) is distinct enough
    for i in range(1, len(shown)):  # the simpler rule: neighbours in label order
        if shown[i].side == shown[i + 1].side:
            assert delta_e(shown[i].colour, shown[i + 1].colour) >= MIN_DELTA_E


def test_the_catalogue_colour_is_kept_where_it_is_distinct_enough() -> None:
    leg = catalogue("leg")
    assert [s.colour for s in distinct_colours(leg)] == [s.colour for s in leg]
    thigh = catalogue("thigh")
    assert [s.colour for s in distinct_colours(thigh)] == [s.colour for s in thigh]
    # a catalogue colour too close to one listed before it is replaced (0.1's semimembranosus, 14.1 from the
    # vastus intermedius it touches in the phantom)
    import dataclasses

    old = [dataclasses.replace(s, colour=(210, 245, 60)) if s.key.startswith("semimembranosus") else s for s in thigh]
    changed = {a.key for a, b in zip(old, distinct_colours(old), strict=True) if a.colour != b.colour}
    assert changed == {"semimembranosus_right", "semimembranosus_left"}
    offline = distinct_colours(default_segments(list(range(1, 13))))
    d = pairwise_delta_e([s.colour for s in offline])
    assert d[np.triu_indices(12, 1)].min() >= MIN_DELTA_E


def test_smooth_removes_a_spur_and_never_takes_another_muscle() -> None:
    s = np.zeros((40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    s[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 3
    s[20, 30:36] = 3  # a one-pixel spur
    s[5:12, 5:12] = 4
    s[12, 5:12] = 3  # a thin line along muscle 4
    out = tools.smooth(s, 3, sigma=1.5)
    assert (out[20, 32:36] == 0).all(), "the spur is gone"
    assert (out == 4).sum() == (s == 4).sum(), "the other muscle is untouched"
    assert (out[(yy - 20) ** 2 + (xx - 20) ** 2 < 64] == 3).all(), "the body stays"
    with pytest.raises(ValueError):
        tools.smooth(s, 3, sigma=0)


def test_locked_muscles_are_not_painted_over_nor_changed_by_tools(series) -> None:
    image, labels, _ = series
    session = EditSession(image, labels.copy())
    z = 2
    y, x = (int(v) for v in np.argwhere(labels[z] == 4).mean(axis=0))
    session.set_locked(4, True)
    session.begin_stroke(z, (y, x), value=5, radius=4)
    session.end_stroke()
    np.testing.assert_array_equal(session.labels[z] == 4, labels[z] == 4)
    session.begin_stroke(z, (y, x), value=5, radius=4, erase=True, erase_all=True)
    session.end_stroke()
    np.testing.assert_array_equal(session.labels[z] == 4, labels[z] == 4)
    session.remove_small_islands(z, None, 10_000)  # would clear every muscle of the slice
    assert ((session.labels[z] == 4) == (labels[z] == 4)).all() and not (session.labels[z] == 5).any()
    session.set_locked(4, False)
    session.begin_stroke(z, (y, x), value=5, radius=2)
    session.end_stroke()
    assert session.labels[z, y, x] == 5


def test_per_muscle_opacity_and_difference_hatch() -> None:
    style = render.OverlayStyle(active=1, opacity=0.8)
    style.strength[2] = 0.25
    a = style.alphas()
    assert a[0, 2] == pytest.approx(0.25 * 0.6 * 0.8) and a[0, 1] == pytest.approx(0.8)
    out = np.zeros((4, 4), np.uint32)
    labels, draft = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    labels[1:3, 1:3] = 1
    render.mark_differences(out, labels, draft)
    assert (out == render.DIFF_COLOUR).sum() == 2 and out[0, 0] == 0  # every other differing pixel


def test_dice_per_muscle_and_window_presets() -> None:
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    a[0, :2, :2] = 1
    b[0, :2, :1] = 1
    a[1, 2:, 2:] = 2
    b[1, 2:, 2:] = 2
    d = stats.dice_per_label(a, b, [1, 2, 3])
    assert d[1] == pytest.approx(2 * 2 / (4 + 2)) and d[2] == 1.0 and np.isnan(d[3])
    q = render.Quantized(np.linspace(0, 1000, 1000, dtype=np.float32).reshape(10, 10, 10))
    w_full, l_full = q.percentile_window(0, 100)
    assert w_full == pytest.approx(1000, rel=1e-3) and l_full == pytest.approx(500, rel=1e-3)
    where = np.zeros((10, 10, 10), bool)
    where[:, :, :2] = True
    w_sel, _ = q.percentile_window(0, 100, where)
    assert w_sel < w_full
