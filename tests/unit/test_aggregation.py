"""Weight arithmetic: Dafne's linear merge, the staleness-discounted delta merge, SegViz's partial merge."""

from __future__ import annotations

import numpy as np
import pytest

from models import aggregation as agg


def _weights(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(3, 3, 1, 4)).astype(np.float32),
        rng.normal(size=(4,)).astype(np.float32),
        rng.normal(size=(1, 1, 4, 7)).astype(np.float32),
        rng.normal(size=(7,)).astype(np.float32),
    ]


NAMES = ["enc0_stem_conv/kernel", "enc0_stem_bn/gamma", "head_conv/kernel", "head_conv/bias"]


def test_average_of_identical_weights_is_identity() -> None:
    w = _weights(0)
    for merged in (agg.average([w, w, w]), agg.linear_merge(w, w, 0.5), agg.linear_merge(w, w, 0.3)):
        for a, b in zip(merged, w, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_linear_merge_is_dafnes_convex_combination() -> None:
    cur, upd = _weights(1), _weights(2)
    for a, b in zip(agg.linear_merge(cur, upd, 0.0), cur, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(agg.linear_merge(cur, upd, 1.0), upd, strict=True):
        np.testing.assert_array_equal(a, b)
    for m, c, u in zip(agg.linear_merge(cur, upd, 0.25), cur, upd, strict=True):
        np.testing.assert_allclose(m, 0.75 * c + 0.25 * u, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        agg.linear_merge(cur, upd, 1.5)


def test_delta_applied_to_a_newer_base_lands_where_expected() -> None:
    base = _weights(3)  # version v, what the site trained from
    learned = _weights(4)  # what the site's training changed
    newer = _weights(5)  # the federation moved on: version v + 3
    update = agg.apply_delta(base, learned)
    current = agg.apply_delta(base, newer)
    merged = agg.delta_merge(current, base, update, staleness=3, discount=0.5, weight=0.5)
    for m, c, d in zip(merged, current, learned, strict=True):
        np.testing.assert_allclose(m, c + 0.5 * 0.5**3 * d, rtol=1e-5, atol=1e-5)
    # no staleness and no newer version: the same as Dafne's linear merge
    fresh = agg.delta_merge(base, base, update, staleness=0, discount=0.5, weight=0.5)
    for a, b in zip(fresh, agg.linear_merge(base, update, 0.5), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="staleness"):
        agg.delta_merge(current, base, update, staleness=-1)


def test_delta_and_apply_delta_invert_each_other() -> None:
    a, b = _weights(6), _weights(7)
    back = agg.apply_delta(b, agg.delta(a, b))
    for x, y in zip(back, a, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
    for x, y in zip(agg.scale(a, 2.0), a, strict=True):
        np.testing.assert_allclose(x, 2 * y)


def test_partial_merge_averages_representation_and_keeps_task() -> None:
    cur, upd = _weights(8), _weights(9)
    merged = agg.partial_merge(cur, upd, NAMES, representation=("enc",), weight=0.5)
    for i in (0, 1):
        np.testing.assert_allclose(merged[i], 0.5 * (cur[i] + upd[i]), rtol=1e-6, atol=1e-6)
    for i in (2, 3):
        np.testing.assert_array_equal(merged[i], cur[i])
    from_update = agg.partial_merge(cur, upd, NAMES, task_from="update")
    np.testing.assert_array_equal(from_update[2], upd[2])
    assert agg.representation_mask(NAMES) == [True, True, False, False]
    with pytest.raises(ValueError, match="nothing would be merged"):
        agg.partial_merge(cur, upd, NAMES, representation=("xyz",))
    with pytest.raises(ValueError, match="layer names"):
        agg.partial_merge(cur, upd, NAMES[:2])


def test_mismatched_models_are_refused() -> None:
    a = _weights(10)
    with pytest.raises(ValueError, match="differ"):
        agg.linear_merge(a, a[:3])
    b = [w.copy() for w in a]
    b[0] = np.zeros((3, 3, 1, 5), np.float32)
    with pytest.raises(ValueError, match="shape"):
        agg.delta(a, b)
    with pytest.raises(ValueError, match="coefficients"):
        agg.average([a, a], [1.0, -1.0])
