"""Keras networks: a small 2D residual encoder–decoder for single-limb axial slices.

This module is *package code*: its source travels inside every model package and is executed there, so it
imports nothing of ours and imports Keras only inside functions (a federation server merges weights
without TensorFlow).

Layer names carry the block they belong to: ``enc*`` (encoder, the representation block of a SegViz-style
partial merge), ``dec*`` (decoder) and ``head*`` (classifier). Each weight's name is ``<layer>/<variable>``.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_NETWORK: dict[str, Any] = {
    "architecture": "resunet2d",
    "base_filters": 16,
    "levels": 4,
    "bn_momentum": 0.9,
}


#: TensorFlow settings read once, at its import. oneDNN's CPU kernels are off by default on CPUs without
#: AVX-512 (AMD EPYC, older Xeons); on the 2-core AVX2 test machine they make the learning step 1.5× faster
#: (benchmarks/models.py). An operator's own value wins.
TF_ENVIRONMENT: dict[str, str] = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def tensorflow() -> Any:
    """TensorFlow, imported with :data:`TF_ENVIRONMENT` (set where the environment does not say)."""
    import os
    import sys

    if "tensorflow" not in sys.modules:
        for key, value in TF_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
    return _tensorflow()


def _tensorflow() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - an install without either extra
        raise RuntimeError(
            "TensorFlow is not installed: pip install 'laurel[cpu]', or 'laurel[gpu]' on a host with an NVIDIA GPU"
        ) from exc
    return tf


def configure_threads(intra_op: int | None = None, inter_op: int = 1) -> None:
    """Set TensorFlow's thread pools once (before the first op runs) and let every GPU's memory grow as
    needed (several worker processes share one GPU); later calls are no-ops."""
    import os

    tf = tensorflow()
    intra = intra_op or int(os.environ.get("LAUREL_TF_THREADS", "0")) or (os.cpu_count() or 1)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # the runtime is already initialised: keep what it has
        logger.debug("TensorFlow thread pools already initialised")


def preload() -> None:
    """Import TensorFlow and Keras now, in the calling thread. Python's import of TensorFlow is not safe
    from two threads at once (a worker's model warm-up and its first job would both start it), so a
    process that runs models in threads calls this first."""
    tensorflow()
    import keras  # noqa: F401

    configure_threads()


def device_summary() -> str:
    """Where the models run: ``GPU: <names>`` when TensorFlow sees one, else ``CPU``."""
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU (TensorFlow {tf.__version__}, no GPU visible)"
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(str(details.get("device_name", gpu.name)))
    return f"GPU: {', '.join(names)} (TensorFlow {tf.__version__})"


_BATCH_NORM: list[Any] = []  # the layer class, made once TensorFlow is imported


def batch_norm_layer() -> Any:
    """Keras' ``BatchNormalization`` whose normalisation with the moving statistics (inference, or a
    learning step with frozen statistics) runs TensorFlow's fused kernel (one op instead of five; with
    oneDNN ~15 % faster for the whole network). Same variables, same names, same results; with batch
    statistics it is Keras' own."""
    if not _BATCH_NORM:
        tf = tensorflow()
        from keras import layers

        class BatchNorm(layers.BatchNormalization):
            def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
                if (
                    (training and self.trainable)
                    or mask is not None
                    or len(inputs.shape) != 4
                    or self.axis not in (-1, 3)
                ):
                    return super().call(inputs, training=training, mask=mask)
                out, _, _ = tf.compat.v1.nn.fused_batch_norm(
                    tf.cast(inputs, tf.float32),
                    self.gamma,
                    self.beta,
                    mean=self.moving_mean,
                    variance=self.moving_variance,
                    epsilon=self.epsilon,
                    is_training=False,
                )
                return out

        _BATCH_NORM.append(BatchNorm)
    return _BATCH_NORM[0]


def _conv_bn(x: Any, filters: int, name: str, momentum: float, *, kernel: int = 3, relu: bool = True) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = batch_norm_layer()(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _res_block(x: Any, filters: int, name: str, momentum: float) -> Any:
    """Two 3×3 convolutions with a short (identity) skip, as in ResNet/VNet stages."""
    from keras import layers

    shortcut = x
    if x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, f"{name}_proj", momentum, kernel=1, relu=False)
    y = _conv_bn(x, filters, f"{name}_a", momentum)
    y = _conv_bn(y, filters, f"{name}_b", momentum, relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_network(n_classes: int, patch: tuple[int, int], config: dict[str, Any] | None = None) -> Any:
    """The residual encoder–decoder: returns an uncompiled ``keras.Model`` with a softmax output.

    Encoder: a 3×3 stem, then per level a 2×2 strided convolution (down-sampling, VNet style) and a
    residual block; decoder: 2×2 transposed convolution, a long skip (addition) from the encoder level of the
    same resolution and a residual block; head: 1×1 convolution and softmax over ``n_classes``.
    """
    import keras
    from keras import layers

    cfg = {**DEFAULT_NETWORK, **(config or {})}
    if cfg["architecture"] != "resunet2d":
        raise ValueError(f"unknown architecture {cfg['architecture']!r}")
    base, levels, mom = int(cfg["base_filters"]), int(cfg["levels"]), float(cfg["bn_momentum"])
    factor = 2 ** (levels - 1)
    if patch[0] % factor or patch[1] % factor:
        raise ValueError(f"patch {patch} must be divisible by {factor} for {levels} levels")
    inp = keras.Input((patch[0], patch[1], 1), name="image")
    x = _conv_bn(inp, base, "enc0_stem", mom)
    skips = []
    for lvl in range(levels):
        filters = base * 2**lvl
        if lvl:
            x = layers.Conv2D(filters, 2, strides=2, use_bias=False, name=f"enc{lvl}_down_conv")(x)
            x = batch_norm_layer()(momentum=mom, name=f"enc{lvl}_down_bn")(x)
            x = layers.ReLU(name=f"enc{lvl}_down_relu")(x)
        x = _res_block(x, filters, f"enc{lvl}_res", mom)
        skips.append(x)
    for lvl in reversed(range(levels - 1)):
        filters = base * 2**lvl
        x = layers.Conv2DTranspose(filters, 2, strides=2, use_bias=False, name=f"dec{lvl}_up_conv")(x)
        x = batch_norm_layer()(momentum=mom, name=f"dec{lvl}_up_bn")(x)
        x = layers.ReLU(name=f"dec{lvl}_up_relu")(x)
        x = layers.Add(name=f"dec{lvl}_skip")([x, skips[lvl]])
        x = _res_block(x, filters, f"dec{lvl}_res", mom)
    x = layers.Conv2D(n_classes, 1, name="head_conv")(x)
    out = layers.Softmax(name="head_softmax")(x)
    return keras.Model(inp, out, name="laurel_resunet2d")


def weight_names(model: Any) -> list[str]:
    """``<layer>/<variable>`` for every weight, in ``model.get_weights()`` order."""
    names = []
    for layer in model.layers:
        for var in layer.weights:
            names.append(f"{layer.name}/{var.name}")
    if len(names) != len(model.weights):
        raise RuntimeError("layer weights do not cover the model's weights")
    return names


def build_plain_unet(n_classes: int, patch: tuple[int, int], base_filters: int = 32, levels: int = 4) -> Any:
    """A plain U-Net (two 3×3 conv + ReLU per level, max-pooling, concatenating skips): the benchmark peer."""
    import keras
    from keras import layers

    inp = keras.Input((patch[0], patch[1], 1))
    x, skips = inp, []
    for lvl in range(levels):
        f = base_filters * 2**lvl
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        if lvl < levels - 1:
            skips.append(x)
            x = layers.MaxPooling2D()(x)
    for lvl in reversed(range(levels - 1)):
        f = base_filters * 2**lvl
        x = layers.Conv2DTranspose(f, 2, strides=2)(x)
        x = layers.Concatenate()([x, skips[lvl]])
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    out = layers.Conv2D(n_classes, 1, activation="softmax")(x)
    return keras.Model(inp, out, name="plain_unet")
