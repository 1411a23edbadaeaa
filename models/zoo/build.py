"""Reproducible training and evaluation of the default models on SYNTHETIC phantoms.

``laurel model train --region leg --cohort pretrain_pd_leg --out models/zoo/leg.laurel`` calls
:func:`train_default`; :func:`evaluate` reports Dice on held-out PD phantoms and on T1 phantoms (the new
contrast the learning loop must conquer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import dice
from models.package import ModelPackage, create, dumps
from models.phantom import PhantomSpec, cohort, generate
from models.zoo import MANIFEST, ZOO_DIR, ZooModel, definition, manifest

logger = logging.getLogger(__name__)

Case = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]


def phantom_case(spec: PhantomSpec, cache_dir: Path | None = None) -> Case:
    """Image, labels and spacing of one phantom (optionally cached as ``.npz`` under ``cache_dir``)."""
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(repr(spec.key()).encode()).hexdigest()[:20]
        path = Path(cache_dir) / f"{spec.region}_{spec.contrast}_{spec.seed}_{digest}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as npz:
                sp = tuple(float(v) for v in npz["spacing"])
                return npz["image"], npz["labels"], (sp[0], sp[1], sp[2])
    ph = generate(spec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, image=ph.image, labels=ph.labels, spacing=np.asarray(ph.spacing))
    return ph.image, ph.labels, ph.spacing


def cases(specs: Sequence[PhantomSpec], cache_dir: Path | None = None) -> Iterator[Case]:
    """Phantom cases, generated one at a time."""
    for spec in specs:
        yield phantom_case(spec, cache_dir)


def t1_specs(defn: ZooModel, n: int | None = None) -> list[PhantomSpec]:
    """Held-out T1 subjects: the T1 validation cohort of the region, or the PD validation subjects
    imaged with T1 contrast where the region has none."""
    try:
        return cohort(f"validation_t1_{defn.region}", n)
    except ValueError:
        return [dataclasses.replace(s, contrast="t1") for s in cohort(defn.validation_cohort, n)]


def evaluate(pkg: ModelPackage, specs: Sequence[PhantomSpec], cache_dir: Path | None = None) -> dict[str, Any]:
    """Overall (voxel-weighted) Dice per subject, with median, mean and min, and mean per-label Dice."""
    per_subject: list[float] = []
    per_label: dict[str, list[float]] = {}
    names = pkg.label_names()
    for spec, (image, labels, spacing) in zip(specs, cases(specs, cache_dir), strict=True):
        scores = dice(pkg.apply(image, spacing), labels, names)
        per_subject.append(round(scores["overall"], 4))
        for key, value in scores.items():
            if key not in ("overall", "mean"):
                per_label.setdefault(key.removesuffix("_right").removesuffix("_left"), []).append(value)
        logger.info("%s: Dice %.3f", spec.describe(), scores["overall"])
    arr = np.asarray(per_subject)
    return {
        "subjects": len(per_subject),
        "median": round(float(np.median(arr)), 4),
        "mean": round(float(arr.mean()), 4),
        "min": round(float(arr.min()), 4),
        "per_subject": per_subject,
        "per_muscle": {k: round(float(np.mean(v)), 4) for k, v in per_label.items()},
    }


def train_default(
    name: str,
    cohort_name: str | None = None,
    *,
    subjects: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    validation_subjects: int | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[ModelPackage, dict[str, Any]]:
    """Pretrain the default model ``name`` on a PD cohort and evaluate it on held-out PD and T1 phantoms."""
    defn = definition(name)
    specs = cohort(cohort_name or defn.cohort, subjects or defn.subjects)
    wrong = {s.region for s in specs} - {defn.region}
    if wrong:
        raise ValueError(f"cohort {cohort_name!r} holds {sorted(wrong)} subjects, model {name!r} is {defn.region}")
    start = time.perf_counter()
    pkg = create(
        defn.region,
        defn.name,
        input_spec=defn.input_spec(),
        network=defn.network,
        learning=defn.learning,
        seed=seed,
        family_id=defn.family_id,
    )
    trained = pkg.train(cases(specs, cache_dir), epochs=epochs or defn.epochs, seed=seed, progress=progress)
    train_s = time.perf_counter() - start
    report = {
        "cohort": cohort_name or defn.cohort,
        "subjects": len(specs),
        "epochs": epochs or defn.epochs,
        "train_seconds": round(train_s, 1),
        "dice_pd": evaluate(trained, cohort(defn.validation_cohort, validation_subjects), cache_dir),
        "dice_t1": evaluate(trained, t1_specs(defn, validation_subjects), cache_dir),
    }
    meta = {**trained.metadata, "evaluation": report}
    return trained.with_weights(trained.weights, metadata=meta), report


def write_package(pkg: ModelPackage, out: Path, *, register: bool | None = None) -> dict[str, Any]:
    """Write ``pkg`` to ``out``; when ``out`` lies in the zoo directory (or ``register``), list it in
    ``manifest.json`` so it is trusted. Returns the manifest entry."""
    data = dumps(pkg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    from models.signing import parse

    header = parse(data).header
    evaluation = pkg.metadata.get("evaluation", {})
    entry = {
        "file": out.name,
        "version": pkg.version,
        "family_id": pkg.family_id,
        "payload_sha256": header["payload_sha256"],
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "dice_pd_median": evaluation.get("dice_pd", {}).get("median"),
        "dice_t1_median": evaluation.get("dice_t1", {}).get("median"),
    }
    if register or (register is None and out.resolve().parent == ZOO_DIR):
        current = manifest()
        current.setdefault("packages", {})[pkg.name] = entry
        MANIFEST.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entry


def recode_default(name: str) -> tuple[ModelPackage, dict[str, Any]]:
    """The shipped package ``name`` with this Laurel's model code (same weights, version and evaluation):
    how a change of the learning step reaches the zoo without retraining. Write it with
    :func:`write_package` to ``models/zoo/<name>.laurel``."""
    from models.code import default_code
    from models.signing import canonical_json, sha256_hex
    from models.zoo import load_default

    pkg = load_default(name)
    code = default_code()
    record = {
        "kind": "recode",
        "version": pkg.version,
        "code_sha256": sha256_hex(canonical_json(code)),
        "at": pkg.metadata.get("created_at"),
    }
    meta = {**pkg.metadata, "history": [*pkg.metadata.get("history", []), record]}
    return pkg.with_weights(pkg.weights, code=code, metadata=meta), record
