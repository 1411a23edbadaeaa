"""Private reference data and the Dice of a model on it (the server's only heavy work).

One folder per model under ``validation_dir``: ``<model>/*.npz`` each holding ``image`` (float, (z,y,x)),
``labels`` (uint8, (z,y,x)) and ``spacing`` ((dz,dy,dx) mm), read with ``allow_pickle=False``. When a
model's folder holds no case, a small SYNTHETIC phantom cohort is written there on first start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from federation.server import modelapi

log = logging.getLogger(__name__)


class ValidationDataError(RuntimeError):
    """The reference data of a model is missing or malformed (a server configuration problem)."""


@dataclass(frozen=True)
class ReferenceCase:
    """One reference volume with its labels."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class ValidationResult:
    """The Dice of a model on the reference set: the mean of each case's voxel-weighted overall Dice."""

    dice: float
    per_case: dict[str, float]
    seconds: float
    fingerprint: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_detail(self) -> dict[str, Any]:
        """What the registry records next to a version."""
        return {
            "per_case": self.per_case,
            "validation_set": self.fingerprint,
            "seconds": round(self.seconds, 3),
            **self.detail,
        }


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ValidationSet:
    """The reference cases of one model, loaded once and cached."""

    def __init__(self, folder: Path, model: str) -> None:
        self.folder = Path(folder)
        self.model = model
        self._cases: list[ReferenceCase] | None = None
        self._fingerprint = ""

    def ensure_default(
        self,
        region: str,
        *,
        subjects: int,
        slices: int,
        matrix: int | None,
        contrasts: Sequence[str] = ("pd",),
    ) -> int:
        """Write SYNTHETIC phantom cases when the folder holds none; returns how many were written."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if any(self.folder.glob("*.npz")):
            return 0
        written = 0
        for name, image, labels, spacing in modelapi.default_validation_cases(
            region, subjects=subjects, slices=slices, matrix=matrix, contrasts=contrasts
        ):
            _write_npz(
                self.folder / f"{name}.npz",
                image=image.astype(np.float32),
                labels=labels.astype(np.uint8),
                spacing=np.asarray(spacing, dtype=np.float64),
            )
            written += 1
        log.info("wrote %d SYNTHETIC phantom validation cases for %s to %s", written, self.model, self.folder)
        self._cases = None
        return written

    def cases(self) -> list[ReferenceCase]:
        """The reference cases, sorted by file name; ``ValidationDataError`` if none or malformed."""
        if self._cases is not None:
            return self._cases
        files = sorted(self.folder.glob("*.npz"))
        if not files:
            raise ValidationDataError(f"no reference cases (*.npz) for model {self.model} in {self.folder}")
        cases: list[ReferenceCase] = []
        digest = hashlib.sha256()
        for path in files:
            data = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
            try:
                with np.load(path, allow_pickle=False) as npz:
                    image = np.asarray(npz["image"], dtype=np.float32)
                    labels = np.asarray(npz["labels"])
                    spacing = tuple(float(v) for v in np.asarray(npz["spacing"]).ravel()[:3])
            except (KeyError, ValueError, OSError) as exc:
                raise ValidationDataError(f"{path}: needs arrays image, labels, spacing ({exc})") from exc
            if image.ndim != 3 or image.shape != labels.shape or len(spacing) != 3:
                raise ValidationDataError(f"{path}: image and labels must be 3-D (z,y,x) of the same shape")
            if labels.dtype != np.uint8:
                labels = labels.astype(np.uint8)
            cases.append(ReferenceCase(path.stem, image, labels, (spacing[0], spacing[1], spacing[2])))
        self._cases = cases
        self._fingerprint = digest.hexdigest()[:16]
        return cases

    @property
    def fingerprint(self) -> str:
        """A short digest of the case files (Dice values compare only under the same fingerprint)."""
        self.cases()
        return self._fingerprint

    def evaluate(self, pkg: Any) -> ValidationResult:
        """Apply ``pkg`` to every case and return the mean overall Dice against the reference labels."""
        t0 = time.perf_counter()
        values = modelapi.label_values(pkg)
        per_case: dict[str, float] = {}
        for case in self.cases():
            predicted = modelapi.apply(pkg, case.image, case.spacing)
            if predicted.shape != case.labels.shape:
                raise ValidationDataError(
                    f"model output shape {predicted.shape} differs from case {case.name} {case.labels.shape}"
                )
            per_case[case.name] = modelapi.overall_dice(predicted, case.labels, values)
        dice = float(np.mean(list(per_case.values())))
        return ValidationResult(dice, per_case, time.perf_counter() - t0, self.fingerprint)


class Validator:
    """The validation sets of every model under one folder."""

    def __init__(
        self,
        root: Path,
        *,
        default_subjects: int = 3,
        default_slices: int = 12,
        default_matrix: int | None = None,
        default_contrasts: Sequence[str] = ("pd",),
    ) -> None:
        self.root = Path(root)
        self.default_contrasts = tuple(default_contrasts)
        self.default_subjects = default_subjects
        self.default_slices = default_slices
        self.default_matrix = default_matrix
        self._sets: dict[str, ValidationSet] = {}

    def set_for(self, model: str) -> ValidationSet:
        """The validation set of ``model`` (created lazily)."""
        if model not in self._sets:
            self._sets[model] = ValidationSet(self.root / model, model)
        return self._sets[model]

    def prepare(self, model: str, region: str) -> None:
        """Make sure ``model`` has reference cases (phantoms by default) and load them."""
        vs = self.set_for(model)
        vs.ensure_default(
            region,
            subjects=self.default_subjects,
            slices=self.default_slices,
            matrix=self.default_matrix,
            contrasts=self.default_contrasts,
        )
        vs.cases()

    def evaluate(self, model: str, pkg: Any) -> ValidationResult:
        """Dice of ``pkg`` on ``model``'s reference cases."""
        return self.set_for(model).evaluate(pkg)
