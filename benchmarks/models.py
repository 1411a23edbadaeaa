"""Model speed on this CPU: inference on a 40-slice 432² both-limb series, incremental learning on
20 slices × 5 epochs; against a plain 1.9 M-parameter 256² U-Net run in the same script.

    .venv/bin/python benchmarks/models.py [--model leg] [--repeats 3] [--no-baseline]

Targets (issue 4): ≥ 20 slices/s inference, ≤ 30 s learning (issue 14: also with the node's replayed slices).
Anchors: Dafne ~5 min per dataset for its learning step on a CPU; a plain 1.9 M-parameter 256² U-Net here
did 7.7 slices/s and 53 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# this file is called models.py: put the repository (the `models` package) ahead of benchmarks/
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks")]

TARGET_SLICES_PER_S = 20.0
TARGET_LEARN_S = 30.0
ANCHOR_UNET = (7.7, 53.0)
ANCHOR_DAFNE_LEARN_S = 300.0


def _series(region: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    from models.phantom import PhantomSpec, generate

    ph = generate(PhantomSpec(region=region, contrast="t1", seed=7, n_slices=40, matrix=432))  # type: ignore[arg-type]
    assert ph.image.shape == (40, 432, 432)
    return ph.image, ph.labels, ph.spacing


def _model(name: str) -> Any:
    from models.package import create
    from models.zoo import definition, load_default

    try:
        return load_default(name), "shipped"
    except FileNotFoundError:
        d = definition(name)
        return create(d.region, d.name, input_spec=d.input_spec(), network=d.network, learning=d.learning), "untrained"


def bench_laurel(name: str, repeats: int) -> dict[str, float]:
    """Inference (cold and warm) and incremental learning (cold and warm) of the Laurel model."""
    from dicom_node.work.guard import GuardSettings, spread
    from models.zoo import definition

    image, labels, spacing = _series(definition(name).region)
    pkg, kind = _model(name)
    print(f"laurel {name} model ({kind}): {sum(w.size for w in pkg.weights):,} parameters, input spec {pkg.input_spec}")
    t = time.perf_counter()
    pkg.apply(image, spacing)
    cold = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        pkg.apply(image, spacing)
        times.append(time.perf_counter() - t)
    warm = statistics.median(times)
    slices = list(range(10, 30))
    t = time.perf_counter()
    pkg.learn(image, labels, spacing, slices=slices)
    learn_cold = time.perf_counter() - t
    t = time.perf_counter()
    pkg.learn(image, labels, spacing, slices=slices)
    learn_warm = time.perf_counter() - t
    # the guarded step's learning: 20 new slices plus the node's default number of replayed slices
    replayed = spread(range(image.shape[0]), GuardSettings().replay_slices)
    replay = [(image[replayed], labels[replayed], spacing)]
    t = time.perf_counter()
    pkg.learn(image, labels, spacing, slices=slices, replay=replay)
    learn_replay = time.perf_counter() - t
    return {
        "infer_cold_s": cold,
        "infer_s": warm,
        "slices_per_s": image.shape[0] / warm,
        "learn_cold_s": learn_cold,
        "learn_s": learn_warm,
        "learn_replay_s": learn_replay,
        "replayed_slices": len(replayed),
    }


def bench_plain_unet(repeats: int) -> dict[str, float]:
    """The peer: a plain 1.9 M-parameter U-Net on whole 256² slices (resized), Keras fit, batch 5."""
    import keras
    import tensorflow as tf

    from models import network

    network.configure_threads()
    image, labels, _ = _series("leg")
    x = tf.image.resize(image[..., None] / image.max(), (256, 256)).numpy().astype(np.float32)
    y = tf.image.resize(labels[..., None], (256, 256), method="nearest").numpy()[..., 0].astype(np.int32)
    model = network.build_plain_unet(13, (256, 256), base_filters=32, levels=4)
    print(f"plain U-Net: {model.count_params():,} parameters, 256² whole slices")
    model.predict(x[:5], verbose=0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(x, batch_size=8, verbose=0)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    model.compile(optimizer=keras.optimizers.Adam(amsgrad=True), loss="sparse_categorical_crossentropy")
    model.fit(x[10:30], y[10:30], batch_size=5, epochs=5, verbose=0)
    learn = time.perf_counter() - t
    warm = statistics.median(times)
    return {"infer_s": warm, "slices_per_s": x.shape[0] / warm, "learn_s": learn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="leg", help="zoo model: leg or thigh")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain U-Net peer (~1-2 min)")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    ours = bench_laurel(args.model, args.repeats)
    print(
        f"laurel inference: 40-slice 432² both-limb series in {ours['infer_s']:.2f} s = "
        f"{ours['slices_per_s']:.1f} slices/s (first call incl. graph build {ours['infer_cold_s']:.2f} s); "
        f"target ≥ {TARGET_SLICES_PER_S:.0f} → {'MET' if ours['slices_per_s'] >= TARGET_SLICES_PER_S else 'MISSED'}"
    )
    print(
        f"laurel incremental learning: 20 slices × 5 epochs in {ours['learn_s']:.1f} s "
        f"(first call incl. graph build {ours['learn_cold_s']:.1f} s); target ≤ {TARGET_LEARN_S:.0f} s → "
        f"{'MET' if ours['learn_cold_s'] <= TARGET_LEARN_S else 'MISSED'}"
    )
    print(
        f"laurel learning with replay: 20 new + {ours['replayed_slices']:.0f} replayed slices × 5 epochs in "
        f"{ours['learn_replay_s']:.1f} s; "
        f"target ≤ {TARGET_LEARN_S:.0f} s → {'MET' if ours['learn_replay_s'] <= TARGET_LEARN_S else 'MISSED'}"
    )
    print(
        f"vs anchors: plain U-Net {ANCHOR_UNET[0]} slices/s → ×{ours['slices_per_s'] / ANCHOR_UNET[0]:.1f}; "
        f"{ANCHOR_UNET[1]:.0f} s → ×{ANCHOR_UNET[1] / ours['learn_cold_s']:.1f} faster; "
        f"Dafne ~{ANCHOR_DAFNE_LEARN_S:.0f} s → ×{ANCHOR_DAFNE_LEARN_S / ours['learn_cold_s']:.0f} faster"
    )
    if not args.no_baseline:
        peer = bench_plain_unet(args.repeats)
        print(
            f"plain U-Net (same run): {peer['slices_per_s']:.1f} slices/s, learning {peer['learn_s']:.1f} s; "
            f"laurel ×{ours['slices_per_s'] / peer['slices_per_s']:.1f} inference, "
            f"×{peer['learn_s'] / ours['learn_cold_s']:.1f} learning"
        )


if __name__ == "__main__":
    main()
