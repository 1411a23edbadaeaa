"""The model zoo: built-in model definitions (leg, thigh) and the shipped, pretrained packages.

The shipped packages (``leg.laurel``, ``thigh.laurel``) are trusted because the sha256 of their payloads is
listed in ``manifest.json``, which ships with the code; they are produced by ``laurel model train`` (see
:mod:`models.zoo.build` and docs/models.md).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.package import ModelPackage

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = ZOO_DIR / "manifest.json"
_NAMESPACE = uuid.UUID("6f1c2a52-8d0e-4d43-9a77-1d5b0c3e9a10")


@dataclass(frozen=True)
class ZooModel:
    """How a default model is built: region, input spec, network, learning settings and its data."""

    name: str
    region: str
    spacing: tuple[float, float]
    patch: tuple[int, int]
    cohort: str
    validation_cohort: str
    network: dict[str, Any] = field(default_factory=dict)
    learning: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    subjects: int | None = None

    @property
    def family_id(self) -> str:
        """Fixed per name, so every node and the federation agree on the family of a default model."""
        return str(uuid.uuid5(_NAMESPACE, f"laurel.zoo.{self.name}"))

    def input_spec(self) -> dict[str, Any]:
        """The package's input spec."""
        return {"spacing": list(self.spacing), "patch": list(self.patch)}


DEFINITIONS: dict[str, ZooModel] = {
    "leg": ZooModel(
        name="leg",
        region="leg",
        spacing=(1.25, 1.25),
        patch=(128, 128),
        cohort="pretrain_pd_leg",
        validation_cohort="validation_pd_leg",
    ),
    "thigh": ZooModel(
        name="thigh",
        region="thigh",
        spacing=(1.75, 1.75),
        patch=(128, 128),
        cohort="pretrain_pd_thigh",
        validation_cohort="validation_pd_thigh",
    ),
}


def definition(name: str) -> ZooModel:
    """The zoo definition called ``name`` (``leg`` or ``thigh``)."""
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise ValueError(f"unknown default model {name!r}; known: {', '.join(DEFINITIONS)}") from None


def manifest() -> dict[str, Any]:
    """The shipped manifest (``{"packages": {name: {...}}}``); empty when nothing is shipped yet."""
    if not MANIFEST.exists():
        return {"packages": {}}
    data: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


def package_path(name: str) -> Path:
    """Path of the shipped package file of ``name``."""
    entry = manifest()["packages"].get(name)
    if entry is None:
        raise FileNotFoundError(f"no shipped package {name!r}; train it with `laurel model train`")
    return ZOO_DIR / str(entry["file"])


def load_default(name: str) -> ModelPackage:
    """The shipped pretrained package ``name`` (``leg`` | ``thigh``), verified against the manifest."""
    from models.package import PackageError, load

    definition(name)
    path = package_path(name)
    pkg = load(path.read_bytes(), allow_zoo=True)
    if pkg.name != name:
        raise PackageError(f"{path.name} holds model {pkg.name!r}, expected {name!r}")
    return pkg


def list_packages() -> list[dict[str, Any]]:
    """One row per shipped package: name, file, version, size, sha256 and reported Dice."""
    rows = []
    for name, entry in sorted(manifest()["packages"].items()):
        path = ZOO_DIR / str(entry["file"])
        rows.append({"name": name, **entry, "present": path.exists()})
    return rows
