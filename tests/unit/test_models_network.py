"""The network and its loss: shapes, softmax, named blocks, size; class balance, border weights, soft Dice."""

from __future__ import annotations

import numpy as np
import pytest

from models import losses, network


def test_default_network_is_small_and_named_by_block() -> None:
    model = network.build_network(7, (128, 128))
    assert 300_000 <= model.count_params() <= 800_000
    names = network.weight_names(model)
    assert len(names) == len(model.get_weights()) == len(set(names))
    assert {n.split("_")[0].rstrip("0123456789") for n in names} == {"enc", "dec", "head"}
    assert any(n.startswith("enc") and n.endswith("moving_mean") for n in names)
    assert model.output_shape == (None, 128, 128, 7)


def test_tiny_network_outputs_probabilities() -> None:
    model = network.build_network(4, (32, 32), {"base_filters": 4, "levels": 3})
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 32, 32, 4)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        network.build_network(4, (30, 30), {"levels": 3})


def test_class_weights_balance_frequencies() -> None:
    lab = np.zeros((1, 10, 10), np.uint8)
    lab[0, :2, :5] = 1  # 10 px
    lab[0, 5:, :] = 2  # 50 px; background 40 px
    w = losses.class_weights(lab, 4)
    assert w[3] == 0.0  # absent class
    counts = np.array([40, 10, 50])
    np.testing.assert_allclose(w[:3] * counts, np.median(counts / 100) * 100, rtol=1e-5)


def test_border_between_muscles_gets_extra_weight() -> None:
    lab = np.zeros((1, 8, 8), np.uint8)
    lab[0, :, :4] = 1
    lab[0, :, 4:6] = 2  # touches muscle 1 at column 3|4, background beyond column 5
    border = losses.border_mask(lab, 1)
    assert border[0, :, 3].all() and border[0, :, 4].all()
    assert not border[0, :, 0].any() and not border[0, :, 7].any()
    w = losses.weight_maps(lab, 3, border_weight=3.0)
    np.testing.assert_allclose(w[0, :, 3] - w[0, :, 0], 3.0, rtol=1e-6)


def test_weighted_cross_entropy_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = rng.integers(0, 3, size=(2, 4, 4))
    w = rng.random((2, 4, 4)).astype(np.float32)
    expected = (w * -np.log(np.take_along_axis(probs, y[..., None], -1)[..., 0])).sum() / w.sum()
    got = float(losses.weighted_cross_entropy(y.astype(np.int32), probs, w))
    assert got == pytest.approx(expected, rel=1e-5)


def test_without_class_balance_every_pixel_weighs_one_plus_its_border() -> None:
    lab = np.zeros((1, 8, 8), np.uint8)
    lab[0, :, :4] = 1
    lab[0, :, 4:6] = 2
    w = losses.weight_maps(lab, 3, border_weight=3.0, class_balance=False)
    np.testing.assert_allclose(w, 1.0 + 3.0 * losses.border_mask(lab, 1), rtol=1e-6)


def test_soft_dice_loss_matches_numpy_and_counts_only_the_muscles_present() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = rng.integers(0, 3, size=(2, 6, 6))  # muscle 3 is absent: it has no Dice to lose
    onehot = np.eye(4, dtype=np.float32)[y]
    inter = (onehot * probs).sum(axis=(0, 1, 2))[1:3]
    total = onehot.sum(axis=(0, 1, 2))[1:3] + probs.sum(axis=(0, 1, 2))[1:3]
    expected = float(np.mean(1.0 - (2 * inter + 1.0) / (total + 1.0)))
    assert float(losses.soft_dice_loss(y.astype(np.int32), probs)) == pytest.approx(expected, rel=1e-5)
    perfect = np.eye(4, dtype=np.float32)[y]
    assert float(losses.soft_dice_loss(y.astype(np.int32), perfect)) == pytest.approx(0.0, abs=1e-6)
    w = np.ones((2, 6, 6), np.float32)
    ce = float(losses.weighted_cross_entropy(y.astype(np.int32), probs, w))
    assert float(losses.segmentation_loss(y.astype(np.int32), probs, w, 0.0)) == pytest.approx(ce, rel=1e-6)
    mixed = float(losses.segmentation_loss(y.astype(np.int32), probs, w, 0.5))
    assert mixed == pytest.approx(ce + 0.5 * expected, rel=1e-5)


def _moving_stats(names: list[str], weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.ravel() for n, w in zip(names, weights, strict=True) if "moving_" in n])


def test_a_steps_normalisation_settings_decide_how_far_the_moving_statistics_move() -> None:
    from models import training

    config = {
        "n_muscles": 3,
        "input_spec": {"patch": [32, 32]},
        "network": {"base_filters": 4, "levels": 3},
    }
    start, names = training.initial_weights(config, seed=1)
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.random((10, 32, 32, 1))).astype(np.float32)  # far from the initial statistics (0, 1)
    y = rng.integers(0, 4, (10, 32, 32)).astype(np.uint8)

    def moved(**norm: object) -> float:
        new, _ = training.fit(config, start, x, y, epochs=2, batch_size=5, learning_rate=1e-3, **norm)  # type: ignore[arg-type]
        assert not np.array_equal(new[0], start[0]), "the convolutions learned"
        return float(np.abs(_moving_stats(names, new) - _moving_stats(names, start)).sum())

    default, slow, frozen = moved(), moved(bn_momentum=0.99), moved(freeze_bn=True)
    assert frozen == 0.0
    assert 0.0 < slow < default / 3, (slow, default)
    assert moved() == pytest.approx(default, rel=1e-4)  # each setting keeps its own graph


def test_the_fused_normalisation_gives_keras_results_and_learns_its_scale() -> None:
    import keras
    import tensorflow as tf

    layer = network.batch_norm_layer()(momentum=0.9, name="x_bn")
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (4, 16, 16, 8)).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights([rng.normal(1, 0.2, 8), rng.normal(0, 0.2, 8), rng.normal(2, 0.5, 8), rng.uniform(4, 12, 8)])
    fused = np.asarray(layer(x, training=False))
    plain = np.asarray(keras.layers.BatchNormalization.call(layer, x, training=False))
    np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-4)
    batch = np.asarray(layer(x, training=True))  # batch statistics: Keras' own path
    np.testing.assert_allclose(batch.mean(axis=(0, 1, 2)), layer.beta.numpy(), atol=1e-3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=False) ** 2)
    grads = tape.gradient(loss, [layer.gamma, layer.beta])
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
