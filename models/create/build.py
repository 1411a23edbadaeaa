"""``laurel model create`` / ``evaluate`` / ``install``: a new model from a site's own labelled data.

:func:`create_model` reads and checks every case (so a bad SEG fails in seconds, not after training),
splits the subjects deterministically into training and held-out ones, trains a new package on the
training cases, reports Dice / HD95 / volume difference per label on the held-out cases and returns the
package with the report in its metadata. :func:`write_signed` signs and writes it; :func:`install_into_node`
makes it a revision of a node's registry, so the node's ``routing`` can name it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.create.dataset import CaseRef, Dataset
from models.create.report import evaluate_cases

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class CreateSettings:
    """How a model is built; the defaults suit real data on a CPU (the tests shrink them)."""

    name: str
    region: str | None = None
    limbs: str = "auto"  # auto | split | none
    spacing: float | None = None  # in-plane mm; None: from the data (the patch covers the anatomy)
    patch: int | None = None  # pixels; None: 128 per limb (split), 256 (none)
    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 2e-3
    augment: bool = True
    base_filters: int = 16
    levels: int = 4
    holdout: float = 0.2  # fraction of subjects (< 1) or a number of subjects (>= 1)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"model name must be letters, digits, '-' or '_', got {self.name!r}")
        if self.limbs not in ("auto", "split", "none"):
            raise ValueError(f"limbs must be auto, split or none, got {self.limbs!r}")
        if not 1 <= self.epochs <= 1000 or not 1 <= self.batch_size <= 512:
            raise ValueError("epochs must be 1..1000 and batch size 1..512")
        if self.holdout < 0:
            raise ValueError("holdout must be a fraction (0..1) or a number of subjects")


def split_subjects(subjects: Sequence[str], holdout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split by subject: subjects ordered by sha256(seed, subject); the first ones are held
    out (a fraction below 1, else a count; at least one each side when there are two or more)."""
    unique = sorted(set(subjects))
    order = sorted(unique, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(order)
    wanted = int(holdout) if holdout >= 1 else round(holdout * n)
    if holdout > 0 and n >= 2:
        wanted = min(max(wanted, 1), n - 1)
    wanted = min(wanted, max(n - 1, 0))
    held, train = order[:wanted], order[wanted:]
    return sorted(train), sorted(held)


def _input_spec(
    settings: CreateSettings, limbs: str, shapes: Sequence[tuple[tuple[int, int, int], tuple[float, float, float]]]
) -> dict[str, Any]:
    patch = settings.patch or (128 if limbs == "split" else 256)
    patch = int(math.ceil(patch / 2 ** (settings.levels - 1)) * 2 ** (settings.levels - 1))
    if settings.spacing is not None:
        spacing = float(settings.spacing)
    else:
        pixel = float(np.median([min(sp[1], sp[2]) for _, sp in shapes]))
        # the field of view (mm) to cover: the image, or half of it per limb
        extent = float(
            np.percentile([max(sh[1] * sp[1], sh[2] * sp[2] / (2 if limbs == "split" else 1)) for sh, sp in shapes], 90)
        )
        spacing = max(pixel, extent / patch)
        spacing = round(min(max(spacing, 0.2), 10.0), 2)
    return {"spacing": [spacing, spacing], "patch": [patch, patch], "limbs": "split" if limbs == "split" else "none"}


def create_model(
    settings: CreateSettings, data: Dataset, progress: Progress | None = None
) -> tuple[Any, dict[str, Any]]:
    """Train a new package on ``data``; returns it (report in its metadata) and the report."""
    from models.package import create

    def tell(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, min(max(fraction, 0.0), 1.0))

    train_subjects, held_subjects = split_subjects(data.subjects(), settings.holdout, settings.seed)
    if not train_subjects:
        raise ValueError("no training subject: the data needs at least one labelled subject besides the held-out ones")
    train = [c for c in data.cases if c.subject in set(train_subjects)]
    held = [c for c in data.cases if c.subject in set(held_subjects)]
    logger.info(
        "%d training case(s) of %d subject(s), %d held-out case(s) of %d subject(s)",
        len(train),
        len(train_subjects),
        len(held),
        len(held_subjects),
    )

    shapes = []
    for i, ref in enumerate(data.cases):  # read everything once: a bad case fails now, not after training
        image, mask, spacing = ref.load()
        if not mask.any():
            logger.warning("case %s has no labelled voxel", ref.subject_ref)
        shapes.append(((int(image.shape[0]), int(image.shape[1]), int(image.shape[2])), spacing))
        tell("reading", (i + 1) / len(data.cases))
    table = data.table
    limbs = settings.limbs
    if limbs == "auto":
        limbs = "split" if table.splittable() else "none"
    if limbs == "split" and not table.splittable():
        raise ValueError("--limbs split needs labels that pair up as right/left (n right, then the same n left)")
    spec = _input_spec(settings, limbs, shapes)
    region = table.region if table.region is not None and limbs == "split" else (settings.region or settings.name)
    if region in ("leg", "thigh") and table.region != region:
        raise ValueError(f"region {region!r} is a catalogue region; its labels are the catalogue's, not these")
    labels = None if region == table.region else table.to_json()
    pkg = create(
        region,
        settings.name,
        input_spec=spec,
        network={"base_filters": settings.base_filters, "levels": settings.levels},
        seed=settings.seed,
        labels=labels,
    )
    logger.info(
        "training %s (%s, %d labels, limbs %s, %s mm, patch %s) for %d epochs",
        settings.name,
        region,
        len(table.labels),
        limbs,
        spec["spacing"][0],
        spec["patch"][0],
        settings.epochs,
    )
    trained = pkg.train(
        data.iter_cases(train),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        augment=settings.augment,
        seed=settings.seed,
        progress=lambda f: tell("training", f),
    )
    report = evaluate(trained, held, data, progress=lambda f: tell("evaluating", f))
    report["model"] = {
        "name": trained.name,
        "region": trained.region,
        "version": trained.version,
        "family_id": trained.family_id,
    }
    report["training"] = {
        "settings": asdict(settings),
        "input_spec": spec,
        "data": data.kind,
        "training_cases": len(train),
        "training_subjects": [_ref(s) for s in train_subjects],
        "held_out_subjects": [_ref(s) for s in held_subjects],
        "seconds": trained.metadata.get("history", [{}])[-1].get("seconds"),
    }
    meta = {**trained.metadata, "evaluation": report, "label_table": table.to_json()}
    return trained.with_weights(trained.weights, metadata=meta), report


def _ref(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()[:12]


def evaluate(
    pkg: Any, refs: Sequence[CaseRef], data: Dataset, progress: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """The per-label report of ``pkg`` on ``refs``; the data's labels are mapped onto the package's by key
    (then name, code and side), so any package can be scored on any labelled data."""
    lut = label_lut(pkg.labels, data)
    total = max(len(refs), 1)

    def cases() -> Any:
        for ref, (image, labels, spacing) in zip(refs, data.iter_cases(refs), strict=True):
            yield (
                f"{ref.subject_ref}/{hashlib.sha256(ref.name.encode()).hexdigest()[:8]}",
                (image, lut[labels], spacing),
            )

    return evaluate_cases(
        lambda image, spacing: pkg.apply(image, spacing),
        cases(),
        pkg.labels,
        progress=None if progress is None else (lambda n: progress(n / total)),
    )


def label_lut(package_labels: Sequence[dict[str, Any]], data: Dataset) -> np.ndarray:
    """A 256-entry table mapping the data's label values to the package's (0 where the package lacks one)."""
    from models.create.labels import LabelDef, LabelTable

    theirs = LabelTable(
        tuple(
            LabelDef(
                int(lab["value"]),
                str(lab["key"]),
                str(lab["name"]),
                lab.get("snomed_code"),
                lab.get("snomed_meaning"),
                (int(lab["colour"][0]), int(lab["colour"][1]), int(lab["colour"][2])),
                lab.get("side"),
            )
            for lab in package_labels
        )
    )
    lut = np.zeros(256, dtype=np.uint8)
    unmatched = []
    for lab in data.table.labels:
        hit = theirs.find(lab.key, lab.name, lab.snomed_code, lab.side)
        if hit is None:
            unmatched.append(lab.key)
        else:
            lut[lab.value] = hit.value
    if unmatched:
        logger.warning("labels %s of the data are not labels of the model; they count as background", unmatched)
    if not lut.any():
        raise ValueError("no label of the data is a label of the model; nothing to evaluate")
    return lut


# ---------------------------------------------------------------------------------------------------------
# keys, signing, installing


def signing_key(path: Path) -> Any:
    """The Ed25519 key that signs created models (PKCS#8 PEM); created (mode 0600) with ``<path>.pub`` if
    it does not exist."""
    from models.signing import generate_keypair, private_key_from_pem, private_key_to_pem, public_key_to_pem

    path = Path(path)
    if path.exists():
        return private_key_from_pem(path.read_bytes())
    private, public = generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_to_pem(private))
    Path(f"{path}.pub").write_bytes(public_key_to_pem(public))
    logger.info("created the model signing key %s (public key %s.pub)", path, path)
    return private


def write_signed(pkg: Any, out: Path, key: Any) -> dict[str, Any]:
    """Sign ``pkg`` with ``key`` and write it to ``out`` (atomically); returns its manifest facts."""
    from models.package import dumps, read_manifest
    from models.signing import sign

    data = sign(dumps(pkg), key)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return {"file": str(out), "size": len(data), **read_manifest(data)}


def read_public_keys(paths: Sequence[Path]) -> list[Any]:
    """Ed25519 public keys from PEM files (or a private key PEM, whose public half is taken)."""
    from models.signing import private_key_from_pem, public_key_from_pem

    keys = []
    for p in paths:
        pem = Path(p).read_bytes()
        keys.append(private_key_from_pem(pem).public_key() if b"PRIVATE KEY" in pem else public_key_from_pem(pem))
    return keys


def load_package(name_or_file: str, public_keys: Sequence[Any] = ()) -> Any:
    """A zoo model by name, or a package file trusted by one of ``public_keys`` (or the shipped zoo)."""
    from models.package import load
    from models.zoo import DEFINITIONS, load_default

    if name_or_file in DEFINITIONS and not Path(name_or_file).exists():
        return load_default(name_or_file)
    return load(Path(name_or_file).read_bytes(), list(public_keys), allow_zoo=True)
