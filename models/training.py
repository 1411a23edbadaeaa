"""Applying, incremental learning and full training of the segmentation network.

*Package code* (travels inside every model package; imports only its sibling package modules, numpy,
scipy and, inside functions, TensorFlow/Keras). Entry points called by :class:`models.package.ModelPackage`:

- :func:`initial_weights` (config) → weights, weight names: a freshly initialised network.
- :func:`apply_volume` (config, weights, volume, spacing) → uint8 label volume at the input's geometry.
- :func:`learn_volume` (config, weights, volume, labels, spacing, slices, progress, limbs, seed, replay,
  overrides) → new weights + record: Dafne's incremental step (at least 5 labelled slices, 5 epochs, batch 5,
  Adam with AMSGrad, border-weighted cross-entropy, every slice used, the last batch may be
  smaller), with *replay*: labelled slices of earlier corrections (``replay``, kept by the caller) are mixed
  into every epoch, so the step keeps what the model knew; batch normalisation runs on its moving statistics
  and keeps them (``freeze_bn``: a batch of 5 patches is no estimate of a population's statistics), while its
  scale and offset learn.
- :func:`train` (config, weights, cases) → weights + record: full training (the zoo's pretraining).

``config`` is the package's plain dict: ``n_muscles``, ``input_spec``, ``network``, ``learning``.
One Keras model per architecture is built lazily and cached in this module (never pickled); weights are
set into it for every call, under a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models import losses, network, preprocessing

logger = logging.getLogger(__name__)

DEFAULT_LEARNING: dict[str, Any] = {
    "epochs": 5,
    "batch_size": 5,
    "learning_rate": 5e-4,
    "min_slices": 5,
    "border_weight": 3.0,
    "border_width": 1,
    "class_balance": False,  # the step weighs pixels by class balance (measured: costs Dice; train() keeps it)
    "dice_weight": 0.0,  # soft Dice loss added to the cross-entropy, times this
    "augment": False,
    "bn_momentum": None,  # moving statistics' momentum in a step (None: the network's own, 0.9)
    "freeze_bn": True,  # normalise with the moving statistics and keep them (measured: --compare bn)
    "seed": 0,
}

Progress = Callable[[float], None]


class _Bundle:
    """A built Keras model with its compiled predict and train functions (one per architecture)."""

    def __init__(self, n_classes: int, patch: tuple[int, int], net_cfg: Mapping[str, Any]) -> None:
        tf = network.tensorflow()
        import keras

        network.configure_threads()
        self.lock = threading.RLock()
        self.model = network.build_network(n_classes, patch, dict(net_cfg))
        self.names = network.weight_names(self.model)
        self.optimizer = keras.optimizers.Adam(learning_rate=1e-3, amsgrad=True)
        self.optimizer.build(self.model.trainable_variables)
        model = self.model
        self._norms = [layer for layer in self.model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        self._momentum = {layer.name: float(layer.momentum) for layer in self._norms}
        self._signature = [
            tf.TensorSpec([None, patch[0], patch[1], 1], tf.float32),
            tf.TensorSpec([None, patch[0], patch[1]], tf.int32),
            tf.TensorSpec([None, patch[0], patch[1]], tf.float32),
        ]
        self._steps: dict[tuple[float | None, bool, float], Any] = {}

        @tf.function(input_signature=self._signature[:1], autograph=False)
        def predict(x: Any) -> Any:
            return model(x, training=False)

        self.predict = predict

    def step(self, bn_momentum: float | None = None, freeze_bn: bool = False, dice_weight: float = 0.0) -> Any:
        """The compiled training step for these settings: ``bn_momentum`` replaces the network's own for
        the moving statistics; ``freeze_bn`` normalises with the moving statistics and keeps them (scale and
        offset still learn); ``dice_weight`` adds the soft Dice loss. One graph per setting, traced with it
        in place."""
        tf = network.tensorflow()
        key = (None if bn_momentum is None else float(bn_momentum), bool(freeze_bn), float(dice_weight))
        if key not in self._steps:
            model, opt = self.model, self.optimizer

            @tf.function(input_signature=self._signature, autograph=False)
            def step(x: Any, y: Any, w: Any) -> Any:
                with tf.GradientTape() as tape:
                    for layer in self._norms:  # read while tracing: baked into this graph only
                        layer.momentum = self._momentum[layer.name] if key[0] is None else key[0]
                    probs = model(x, training=not key[1])
                    loss = losses.segmentation_loss(y, probs, w, key[2])
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
                return loss

            self._steps[key] = step
        return self._steps[key]

    def reset_optimizer(self, learning_rate: float) -> None:
        """A fresh Adam state (moments and step count zero) at ``learning_rate``."""
        for var in self.optimizer.variables:
            var.assign(np.zeros(var.shape, dtype=var.dtype))
        self.optimizer.learning_rate.assign(learning_rate)


_BUNDLES: dict[tuple[Any, ...], _Bundle] = {}
_BUNDLES_LOCK = threading.Lock()


def _get_bundle(config: Mapping[str, Any]) -> _Bundle:
    n_classes = int(config["n_muscles"]) + 1
    patch = tuple(int(p) for p in config["input_spec"]["patch"])
    net = {**network.DEFAULT_NETWORK, **config.get("network", {})}
    key = (n_classes, patch, tuple(sorted(net.items())))
    with _BUNDLES_LOCK:
        if key not in _BUNDLES:
            _BUNDLES[key] = _Bundle(n_classes, (patch[0], patch[1]), net)
        return _BUNDLES[key]


def _learning(config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {**DEFAULT_LEARNING, **config.get("learning", {}), **(overrides or {})}


def initial_weights(config: Mapping[str, Any], seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Weights of a freshly initialised network (deterministic for ``seed``) and their names."""
    network.tensorflow()
    import keras

    network.configure_threads()
    patch = tuple(int(p) for p in config["input_spec"]["patch"])
    with _BUNDLES_LOCK:
        keras.utils.set_random_seed(seed)
        fresh = network.build_network(
            int(config["n_muscles"]) + 1,
            (patch[0], patch[1]),
            {**network.DEFAULT_NETWORK, **config.get("network", {})},
        )
        return [np.asarray(w) for w in fresh.get_weights()], network.weight_names(fresh)


def predict_patches(
    config: Mapping[str, Any], weights: Sequence[np.ndarray], patches: np.ndarray, chunk: int = 32
) -> np.ndarray:
    """Softmax probabilities for ``patches`` (N, P, P, 1) → (N, P, P, n+1)."""
    bundle = _get_bundle(config)
    out = []
    with bundle.lock:
        bundle.model.set_weights(list(weights))
        for i in range(0, len(patches), chunk):
            out.append(bundle.predict(patches[i : i + chunk]).numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0,), np.float32)


def apply_volume(
    config: Mapping[str, Any],
    weights: Sequence[np.ndarray],
    volume: np.ndarray,
    spacing: Sequence[float],
    limbs: str = "auto",
) -> np.ndarray:
    """Segment a volume: preprocess, predict every slice of every limb at once, map back exactly."""
    prepared = preprocessing.preprocess(volume, spacing, config["input_spec"], limbs=limbs)
    probs = predict_patches(config, weights, prepared.patches)
    return preprocessing.postprocess(probs, prepared, int(config["n_muscles"]))


def labelled_slices(labels: np.ndarray) -> list[int]:
    """Indices of the slices that carry any label."""
    lab = np.asarray(labels)
    return [int(z) for z in np.nonzero(lab.reshape(lab.shape[0], -1).any(axis=1))[0]]


def training_data(
    config: Mapping[str, Any],
    volume: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    slices: Sequence[int] | None = None,
    limbs: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Patches and class maps of the labelled slices; limb patches without any label are left out
    (an unlabelled limb is no evidence of background)."""
    lab = np.asarray(labels)
    if lab.shape != np.shape(volume):
        raise ValueError(f"labels shape {lab.shape} differs from the volume's {np.shape(volume)}")
    zs = labelled_slices(lab) if slices is None else sorted({int(s) for s in slices})
    prepared = preprocessing.preprocess(volume, spacing, config["input_spec"], limbs=limbs, slices=zs)
    y = preprocessing.labels_to_patches(lab, prepared, int(config["n_muscles"]))
    keep = y.reshape(len(y), -1).any(axis=1)
    return prepared.patches[keep], y[keep]


def augment_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mild geometric (scale, rotation, shift) and intensity (gamma, gain) jitter; no flips (the anatomy
    is sided). Images bilinear, labels nearest."""
    from scipy import ndimage

    xo, yo = np.empty_like(x), np.empty_like(y)
    h, w = x.shape[1:3]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    for i in range(len(x)):
        ang = np.deg2rad(rng.uniform(-10, 10))
        s = rng.uniform(0.9, 1.1)
        mat = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) / s
        shift = rng.uniform(-8, 8, size=2)
        offset = centre - mat @ centre + shift
        xo[i, ..., 0] = ndimage.affine_transform(x[i, ..., 0], mat, offset, order=1, mode="constant")
        yo[i] = ndimage.affine_transform(y[i], mat, offset, order=0, mode="constant")
        gamma, gain = rng.uniform(0.8, 1.25), rng.uniform(0.9, 1.1)
        xo[i] = gain * np.power(np.clip(xo[i], 0.0, None), gamma)
    return xo, yo


def fit(
    config: Mapping[str, Any],
    weights: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float | Callable[[int], float],
    border_weight: float = 3.0,
    border_width: int = 1,
    augment: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
    bn_momentum: float | None = None,
    freeze_bn: bool = False,
    class_balance: bool = True,
    dice_weight: float = 0.0,
) -> tuple[list[np.ndarray], list[float]]:
    """Train on (x, y) for ``epochs``: shuffled each epoch, every sample used (last batch smaller), a fresh
    Adam (AMSGrad) state; ``learning_rate`` may be a function of the epoch. Returns weights and the mean
    loss per epoch."""
    if len(x) == 0:
        raise ValueError("no labelled samples to learn from")
    n_classes = int(config["n_muscles"]) + 1
    bundle = _get_bundle(config)
    rng = np.random.default_rng(seed)
    wmaps = None if augment else losses.weight_maps(y, n_classes, border_weight, border_width, class_balance)
    n_batches = -(-len(x) // batch_size)
    history: list[float] = []
    with bundle.lock:
        step = bundle.step(bn_momentum, freeze_bn, dice_weight)
        bundle.model.set_weights(list(weights))
        lr0 = learning_rate(0) if callable(learning_rate) else learning_rate
        bundle.reset_optimizer(float(lr0))
        for epoch in range(epochs):
            if callable(learning_rate):
                bundle.optimizer.learning_rate.assign(float(learning_rate(epoch)))
            order = rng.permutation(len(x))
            total = 0.0
            for b in range(n_batches):
                idx = np.sort(order[b * batch_size : (b + 1) * batch_size])
                xb, yb = x[idx], y[idx]
                if augment:
                    xb, yb = augment_batch(xb, yb, rng)
                    wb = losses.weight_maps(yb, n_classes, border_weight, border_width, class_balance)
                else:
                    wb = wmaps[idx]  # type: ignore[index]
                loss = step(xb.astype(np.float32), yb.astype(np.int32), wb)
                total += float(loss) * len(idx)
                if progress is not None:
                    progress((epoch * n_batches + b + 1) / (epochs * n_batches))
            history.append(total / len(x))
            logger.debug("epoch %d/%d loss %.4f", epoch + 1, epochs, history[-1])
        new = [np.asarray(w) for w in bundle.model.get_weights()]
    return new, history


Case = tuple[np.ndarray, np.ndarray, Sequence[float]]


def learn_volume(
    config: Mapping[str, Any],
    weights: Sequence[np.ndarray],
    volume: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    slices: Sequence[int] | None = None,
    progress: Progress | None = None,
    limbs: str = "auto",
    seed: int = 0,
    replay: Sequence[Case] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Dafne's incremental learning step on the corrected slices of one volume, plus replayed slices.

    ``replay`` holds earlier corrections as ``(volume, labels, spacing)`` stacks of labelled slices; their
    patches join the new ones in every epoch (the caller bounds how many). ``overrides`` replaces learning
    settings (``epochs``, ``learning_rate``, ...) for this step only.
    """
    opts = _learning(config, overrides)
    zs = labelled_slices(labels) if slices is None else sorted({int(s) for s in slices})
    if len(zs) < int(opts["min_slices"]):
        raise ValueError(f"incremental learning needs at least {opts['min_slices']} labelled slices, got {len(zs)}")
    start = time.perf_counter()
    x, y = training_data(config, volume, labels, spacing, zs, limbs)
    n_new = len(x)
    if replay:
        old = [training_data(config, v, lab, sp) for v, lab, sp in replay]
        x = np.concatenate([x, *(o[0] for o in old)])
        y = np.concatenate([y, *(o[1] for o in old)])
    new, history = fit(
        config,
        weights,
        x,
        y,
        epochs=int(opts["epochs"]),
        batch_size=int(opts["batch_size"]),
        learning_rate=float(opts["learning_rate"]),
        border_weight=float(opts["border_weight"]),
        border_width=int(opts["border_width"]),
        augment=bool(opts["augment"]),
        seed=int(opts["seed"]) + seed,
        progress=progress,
        bn_momentum=None if opts["bn_momentum"] is None else float(opts["bn_momentum"]),
        freeze_bn=bool(opts["freeze_bn"]),
        class_balance=bool(opts["class_balance"]),
        dice_weight=float(opts["dice_weight"]),
    )
    record = {
        "kind": "incremental",
        "slices": len(zs),
        "samples": len(x),
        "replay_samples": len(x) - n_new,
        "epochs": int(opts["epochs"]),
        "batch_size": int(opts["batch_size"]),
        "learning_rate": float(opts["learning_rate"]),
        "class_balance": bool(opts["class_balance"]),
        "dice_weight": float(opts["dice_weight"]),
        "loss": history,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return new, record


def train(
    config: Mapping[str, Any],
    weights: Sequence[np.ndarray],
    cases: Iterable[tuple[np.ndarray, np.ndarray, Sequence[float]]],
    *,
    epochs: int = 20,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    augment: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    class_balance: bool = True,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Full training on (volume, labels, spacing) cases with a cosine learning-rate decay; class-balanced
    (from scratch, small muscles would otherwise be learned last: without it a model created from 8
    subjects missed some muscles), unlike the incremental step."""
    opts = _learning(config)
    xs, ys = [], []
    n_cases = 0
    for volume, labels, spacing in cases:
        x, y = training_data(config, volume, labels, spacing)
        xs.append(x)
        ys.append(y)
        n_cases += 1
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    start = time.perf_counter()

    def schedule(epoch: int) -> float:
        return float(learning_rate * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * epoch / max(epochs, 1)))))

    new, history = fit(
        config,
        weights,
        x_all,
        y_all,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=schedule,
        border_weight=float(opts["border_weight"]),
        border_width=int(opts["border_width"]),
        augment=augment,
        seed=seed,
        progress=progress,
        class_balance=class_balance,
    )
    record = {
        "kind": "pretrain",
        "cases": n_cases,
        "samples": len(x_all),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "augment": augment,
        "class_balance": class_balance,
        "loss": history,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return new, record
