"""Weighted cross-entropy with extra weight on borders between neighbouring muscles, plus a soft Dice term.

*Package code* (travels inside every model package): the weight maps are numpy/scipy, the losses import
TensorFlow inside the functions.

The weight of a pixel is 1, or with ``class_balance`` the balance weight of its class (median-frequency
balancing: rare, small muscles count as much as the large ones and the background), plus ``border_weight``
where two different muscles meet within ``border_width`` pixels, which is where the network must learn the
fascia planes. :func:`segmentation_loss` adds ``dice_weight`` times the soft Dice loss of the muscles, the
measure a radiologist's correction is judged by. Measured on the learning experiment (docs/benchmarks.md):
in an incremental step class balancing costs Dice (it makes the network paint small muscles too large); the
Dice term on top of the unbalanced loss changed nothing beyond run-to-run noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def class_weights(labels: np.ndarray, n_classes: int, max_weight: float = 10.0) -> np.ndarray:
    """Median-frequency balancing weights ``median(f) / f_c`` (classes absent from ``labels`` get 0),
    clipped to ``[1 / max_weight, max_weight]``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=n_classes)[:n_classes]
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float32)
    if not present.any():
        return weights
    freq = counts[present] / counts.sum()
    weights[present] = np.clip(np.median(freq) / freq, 1.0 / max_weight, max_weight)
    return weights


def border_mask(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` of a border between two different muscles (background gaps included)."""
    from scipy import ndimage

    lab = np.asarray(labels)
    size = (1,) * (lab.ndim - 2) + (2 * width + 1, 2 * width + 1)
    high = ndimage.maximum_filter(lab, size=size)
    low = ndimage.minimum_filter(np.where(lab == 0, np.iinfo(np.uint8).max, lab).astype(np.uint8), size=size)
    return (low != np.iinfo(np.uint8).max) & (high != low)


def weight_maps(
    labels: np.ndarray,
    n_classes: int,
    border_weight: float = 3.0,
    border_width: int = 1,
    class_balance: bool = True,
) -> np.ndarray:
    """Per-pixel loss weights (float32, shape of ``labels``): 1 or the class balance, + muscle-border emphasis."""
    lab = np.asarray(labels, dtype=np.uint8)
    w = class_weights(lab, n_classes)[lab] if class_balance else np.ones(lab.shape, dtype=np.float32)
    if border_weight:
        w = w + np.float32(border_weight) * border_mask(lab, border_width)
    return w.astype(np.float32)


def weighted_cross_entropy(y_true: Any, probs: Any, weights: Any) -> Any:
    """``sum(w · -log p[y]) / sum(w)`` over a batch: ``y_true`` int (N,H,W), ``probs`` softmax (N,H,W,C)."""
    import tensorflow as tf

    p = tf.gather(probs, tf.cast(y_true, tf.int32), axis=-1, batch_dims=3)
    nll = -tf.math.log(tf.clip_by_value(p, 1e-7, 1.0))
    return tf.reduce_sum(weights * nll) / tf.maximum(tf.reduce_sum(weights), 1e-6)


def soft_dice_loss(y_true: Any, probs: Any, smooth: float = 1.0) -> Any:
    """``1 - soft Dice`` per muscle over the batch, averaged over the muscles present in ``y_true``
    (background is not a muscle; a muscle absent from the batch has no Dice to lose)."""
    import tensorflow as tf

    onehot = tf.one_hot(tf.cast(y_true, tf.int32), tf.shape(probs)[-1], dtype=probs.dtype)
    truth = tf.reduce_sum(onehot, axis=[0, 1, 2])[1:]
    inter = tf.reduce_sum(onehot * probs, axis=[0, 1, 2])[1:]
    total = truth + tf.reduce_sum(probs, axis=[0, 1, 2])[1:]
    present = tf.cast(truth > 0, probs.dtype)
    dice = (2.0 * inter + smooth) / (total + smooth)
    return tf.reduce_sum((1.0 - dice) * present) / tf.maximum(tf.reduce_sum(present), 1.0)


def segmentation_loss(y_true: Any, probs: Any, weights: Any, dice_weight: float = 0.0) -> Any:
    """The weighted cross-entropy plus ``dice_weight`` times the soft Dice loss (none when 0)."""
    loss = weighted_cross_entropy(y_true, probs, weights)
    return loss + dice_weight * soft_dice_loss(y_true, probs) if dice_weight else loss
