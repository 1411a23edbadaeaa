"""The server's only door into ``models``: package loading/signing, merging, Dice, zoo and phantom.

Everything the federation server does with a model goes through these functions, so the rest of the server
depends on one small surface (and the imports of TensorFlow & co. happen only when a model is used).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def load_signed(data: bytes, trusted_keys: Sequence[Ed25519PublicKey]) -> Any:
    """A ModelPackage from a signed envelope; the signature is checked before dill sees a byte."""
    from models.package import load

    return load(data, trusted_keys=list(trusted_keys), allow_zoo=False)


def dumps(pkg: Any) -> bytes:
    """The package serialized (unsigned)."""
    from models.package import dumps as _dumps

    return _dumps(pkg)


def sign(data: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """A signed envelope of serialized package bytes."""
    from models.package import sign as _sign

    return _sign(data, private_key)


def load_default(name: str) -> Any:
    """The shipped zoo package of ``name`` (``leg`` | ``thigh``)."""
    from models.zoo import load_default as _load_default

    return _load_default(name)


def region_of(pkg: Any) -> str:
    """The package's body region."""
    return str(pkg.region)


def version_of(pkg: Any) -> int:
    """The package's version number."""
    return int(pkg.version)


def weights_of(pkg: Any) -> list[np.ndarray]:
    """The package's weight arrays, in order."""
    return [np.asarray(w) for w in pkg.weights]


def label_values(pkg: Any) -> list[int]:
    """The label values the package segments (background excluded)."""
    return [int(lab["value"]) for lab in pkg.labels]


def apply(pkg: Any, image: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The package's segmentation of a volume: uint8 (z,y,x), same shape."""
    return np.asarray(pkg.apply(image, spacing))


def overall_dice(predicted: np.ndarray, reference: np.ndarray, values: Sequence[int]) -> float:
    """Voxel-weighted mean Dice over ``values``."""
    from models.metrics import dice

    return float(dice(predicted, reference, list(values))["overall"])


def with_weights(pkg: Any, weights: Sequence[np.ndarray]) -> Any:
    """A copy of ``pkg`` (same version) with other weights: the candidate an update describes."""
    return pkg.with_weights([np.asarray(w) for w in weights])


def annotate(pkg: Any, metadata_update: dict[str, Any]) -> Any:
    """A copy of ``pkg`` with extra metadata (e.g. where a federated version came from)."""
    return pkg.with_weights(pkg.weights, metadata={**dict(pkg.metadata or {}), **metadata_update})


def merge(
    strategy: str,
    *,
    current: Any,
    base: Any,
    candidate: Any,
    weight: float,
    staleness: int,
    discount: float,
    representation: Sequence[str] = (),
    task_from: str = "update",
) -> Any:
    """``candidate`` (learned from ``base``) merged into ``current`` by the package's code: version + 1."""
    if strategy == "linear":
        return current.merge_linear(candidate, weight)
    if strategy == "delta":
        return current.merge_delta(base, candidate, staleness, discount, weight)
    if strategy == "partial":
        return current.merge_partial(candidate, tuple(representation) or ("enc",), weight, task_from)
    raise ValueError(f"unknown merge strategy {strategy!r}")  # the config allows only the three


def default_validation_cases(
    region: str, *, subjects: int, slices: int, matrix: int | None, contrasts: Sequence[str] = ("pd",)
) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """SYNTHETIC phantom reference cases of ``region`` (cohort ``reference_pd_<region>``, subject ``i``
    imaged with ``contrasts[i % len(contrasts)]``): ``(name, image, labels, spacing)``."""
    import dataclasses

    from models.phantom import cohort, generate

    for i, spec in enumerate(cohort(f"reference_pd_{region}", subjects)):
        spec = dataclasses.replace(
            spec,
            n_slices=slices,
            matrix=matrix if matrix else spec.matrix,
            contrast=contrasts[i % len(contrasts)],  # type: ignore[arg-type]
        )
        ph = generate(spec)
        dz, dy, dx = (float(v) for v in ph.spacing)
        yield f"phantom_{region}_{spec.contrast}_{spec.seed}", ph.image, ph.labels, (dz, dy, dx)
