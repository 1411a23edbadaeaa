"""The model package: a self-contained segmentation model that carries its weights *and* its code.

Dafne's idea, kept: a model file holds everything needed to preprocess, apply, learn and merge, so the
node and the federation server treat every model the same way. Its weaknesses, fixed:

- *Code from anyone*: :func:`load` verifies the envelope (sha256 and Ed25519 signature, or membership of
  the shipped zoo by sha256) **before** dill sees a byte (:mod:`models.signing`).
- *Functions as source*: the package stores the source text of its code modules (``models.network``,
  ``losses``, ``preprocessing``, ``training``, ``aggregation``) and executes it, on load, into private
  modules whose imports of each other resolve inside the package. A package written by one Laurel version
  runs its own code in another; the dill payload is a plain dict (no references to our classes).
- Weights travel as an ``.npz`` blob (``allow_pickle=False``) inside the payload.

See docs/models.md for the contract of every function and the file format.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import platform
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.code import DEFAULT_ENTRY, PackageCode, default_code
from models.labels import region_labels
from models.preprocessing import InputSpec
from models.signing import (
    PackageError,
    UntrustedPackage,
    canonical_json,
    generate_keypair,
    parse,
    sha256_hex,
    sign,
    verify,
    wrap,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ModelPackage",
    "PackageError",
    "UntrustedPackage",
    "create",
    "dumps",
    "generate_keypair",
    "load",
    "loads",
    "read_manifest",
    "sign",
]

STATE_FORMAT = "laurel-model/1"
ZOO_MANIFEST = Path(__file__).resolve().parent / "zoo" / "manifest.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def framework_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries a package's code uses (no heavy imports)."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dill": _version_of("dill"),
        "tensorflow": _version_of("tensorflow-cpu") or _version_of("tensorflow"),
        "keras": _version_of("keras"),
        "laurel": _version_of("laurel"),
    }


def weights_to_npz(weights: Sequence[np.ndarray]) -> bytes:
    """Weights as ``.npz`` bytes (arrays ``w000``, ``w001``, ...)."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {f"w{i:03d}": np.asarray(w) for i, w in enumerate(weights)}
    np.savez(buf, **arrays)
    return buf.getvalue()


def weights_from_npz(data: bytes) -> list[np.ndarray]:
    """Inverse of :func:`weights_to_npz`; never unpickles."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        keys = sorted(npz.files)
        if keys != [f"w{i:03d}" for i in range(len(keys))]:
            raise PackageError("weights archive must hold arrays w000, w001, ... only")
        return [np.asarray(npz[k]) for k in keys]


class ModelPackage:
    """A segmentation model: identity, labels, input spec, weights, metadata and the code that uses them.

    Construct with :func:`create` (a new, untrained model) or :func:`load`; derive with :meth:`learn`,
    :meth:`with_weights` and the ``merge_*`` methods (each returns a new package; a package is never
    changed in place).
    """

    def __init__(
        self,
        *,
        family_id: str,
        name: str,
        region: str,
        version: int,
        parent_version: int | None,
        labels: Sequence[Mapping[str, Any]],
        input_spec: InputSpec | Mapping[str, Any],
        config: Mapping[str, Any],
        weights: Sequence[np.ndarray],
        weight_names: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
        code: Mapping[str, str] | PackageCode | None = None,
        entry: Mapping[str, str] | None = None,
    ) -> None:
        try:
            uuid.UUID(str(family_id))
        except ValueError:
            raise PackageError(f"family_id must be a UUID, got {family_id!r}") from None
        if not name or not isinstance(name, str):
            raise PackageError("a model package needs a non-empty name")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise PackageError(f"version must be a non-negative integer, got {version!r}")
        if parent_version is not None and not (isinstance(parent_version, int) and 0 <= parent_version < version):
            raise PackageError(f"parent_version must be below version {version}, got {parent_version!r}")
        spec = input_spec if isinstance(input_spec, InputSpec) else InputSpec.from_dict(input_spec)
        n_classes = check_labels(region, labels, spec.limbs)
        if len(weights) != len(weight_names) or not weights:
            raise PackageError(f"{len(weights)} weight arrays for {len(weight_names)} weight names")
        self.family_id = str(family_id)
        self.name = name
        self.region = region
        self.version = version
        self.parent_version = parent_version
        self.labels = [dict(lab) for lab in labels]
        self.input_spec = spec
        self.config = json.loads(json.dumps(dict(config)))
        self.config["n_muscles"] = n_classes
        self.weights = [np.asarray(w) for w in weights]
        self.weight_names = [str(n) for n in weight_names]
        self.metadata = json.loads(json.dumps(dict(metadata or {})))
        self.entry = {**DEFAULT_ENTRY, **(entry or {})}
        if isinstance(code, PackageCode):
            self._code: PackageCode | None = code
            self.code = code.sources
        else:
            self._code = None
            self.code = dict(code) if code is not None else default_code()
        for ref in self.entry.values():
            if ref.partition(":")[0] not in self.code:
                raise PackageError(f"entry point {ref} names a module the package does not carry")

    # --- identity ---------------------------------------------------------------------------------

    @property
    def n_muscles(self) -> int:
        """Classes the network predicts besides background: muscles per limb when limbs are split
        (labels ``1..n`` right, ``n+1..2n`` left), else the number of labels."""
        return int(self.config["n_muscles"])

    @property
    def catalogue(self) -> bool:
        """True when the labels are those of a catalogue region (``leg``, ``thigh``) in ``models.labels``."""
        return self.region in CATALOGUE_REGIONS

    def label_names(self) -> dict[int, str]:
        """``{value: key}`` of the labels."""
        return {int(lab["value"]): str(lab["key"]) for lab in self.labels}

    def runtime_config(self) -> dict[str, Any]:
        """The plain dict the package code receives."""
        return {**self.config, "input_spec": self.input_spec.to_dict()}

    def manifest(self) -> dict[str, Any]:
        """Identity, sizes and versions: the envelope header's manifest (readable without unpickling)."""
        return {
            "family_id": self.family_id,
            "name": self.name,
            "region": self.region,
            "version": self.version,
            "parent_version": self.parent_version,
            "created_at": self.metadata.get("created_at"),
            "frameworks": self.metadata.get("frameworks", {}),
            "code_sha256": sha256_hex(canonical_json(self.code)),
            "weights_sha256": sha256_hex(weights_to_npz(self.weights)),
            "n_parameters": int(sum(int(np.prod(w.shape)) for w in self.weights)),
            "labels": len(self.labels),
            "input_spec": self.input_spec.to_dict(),
        }

    def __repr__(self) -> str:
        return f"ModelPackage({self.name!r}, region={self.region!r}, version={self.version})"

    # --- code -------------------------------------------------------------------------------------

    def _fn(self, entry: str) -> Callable[..., Any]:
        if self._code is None:
            self._code = PackageCode.get(self.code)
        return self._code.function(self.entry[entry])

    def apply(self, volume: np.ndarray, spacing: Sequence[float], *, limbs: str = "auto") -> np.ndarray:
        """Segment ``volume`` (z, y, x) with ``spacing`` (dz, dy, dx) mm → uint8 labels, same shape.

        ``limbs`` is ``auto`` (found in the image), ``both``, ``right`` or ``left``.
        """
        out = self._fn("apply")(self.runtime_config(), self.weights, np.asarray(volume), tuple(spacing), limbs)
        result = np.asarray(out, dtype=np.uint8)
        if result.shape != np.shape(volume):
            raise PackageError(f"package code returned labels of shape {result.shape} for {np.shape(volume)}")
        return result

    def learn(
        self,
        volume: np.ndarray,
        labels: np.ndarray,
        spacing: Sequence[float],
        *,
        slices: Sequence[int] | None = None,
        progress: Callable[[float], None] | None = None,
        limbs: str = "auto",
        replay: Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ModelPackage:
        """Incremental learning from corrected ``labels`` on ``slices`` (default: every labelled slice;
        at least 5). Returns version+1 whose parent is this version.

        ``replay`` (``(volume, labels, spacing)`` stacks of earlier labelled slices) is mixed into the step;
        ``overrides`` changes learning settings for this step. Both need package code that knows them
        (:meth:`supports_replay`); older code raises :class:`PackageError`.
        """
        fn = self._fn("learn")
        extra: dict[str, Any] = {}
        if replay:
            extra["replay"] = [(np.asarray(v), np.asarray(lab), tuple(sp)) for v, lab, sp in replay]
        if overrides:
            extra["overrides"] = dict(overrides)
        if extra and not self.supports_replay():
            raise PackageError(f"{self!r} carries learning code without replay; learn without it")
        args = (self.runtime_config(), self.weights, np.asarray(volume), np.asarray(labels), tuple(spacing))
        weights, record = fn(*args, slices, progress, limbs, self.version, **extra)
        return self.derive(weights, record)

    def supports_replay(self) -> bool:
        """Whether this package's own learning code accepts replayed slices and per-step overrides."""
        import inspect

        params = inspect.signature(self._fn("learn")).parameters
        return "replay" in params and "overrides" in params

    def train(
        self,
        cases: Any,
        *,
        epochs: int,
        batch_size: int = 16,
        learning_rate: float = 2e-3,
        augment: bool = True,
        seed: int = 0,
        progress: Callable[[float], None] | None = None,
    ) -> ModelPackage:
        """Full training on an iterable of ``(volume, labels, spacing)`` cases → version+1."""
        weights, record = self._fn("train")(
            self.runtime_config(),
            self.weights,
            cases,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            augment=augment,
            seed=seed,
            progress=progress,
        )
        return self.derive(weights, record)

    def derive(self, weights: Sequence[np.ndarray], record: Mapping[str, Any]) -> ModelPackage:
        """A child version (version+1, parent = this version) with ``weights`` and a history ``record``."""
        history = [*self.metadata.get("history", []), {**record, "version": self.version + 1, "at": _now()}]
        meta = {**self.metadata, "history": history, "created_at": _now(), "frameworks": framework_versions()}
        return self.with_weights(weights, version=self.version + 1, parent_version=self.version, metadata=meta)

    def with_weights(self, weights: Sequence[np.ndarray], **changes: Any) -> ModelPackage:
        """A copy with ``weights`` (same shapes) and any constructor field changed, e.g. ``version=7``."""
        if len(weights) != len(self.weights):
            raise PackageError(f"{len(weights)} weight arrays; this model has {len(self.weights)}")
        for i, (new, old) in enumerate(zip(weights, self.weights, strict=True)):
            if np.shape(new) != old.shape:
                raise PackageError(
                    f"weight {i} ({self.weight_names[i]}) has shape {np.shape(new)}, expected {old.shape}"
                )
        fields: dict[str, Any] = {
            "family_id": self.family_id,
            "name": self.name,
            "region": self.region,
            "version": self.version,
            "parent_version": self.parent_version,
            "labels": self.labels,
            "input_spec": self.input_spec,
            "config": self.config,
            "weights": [np.asarray(w, dtype=o.dtype) for w, o in zip(weights, self.weights, strict=True)],
            "weight_names": self.weight_names,
            "metadata": self.metadata,
            "code": self._code if self._code is not None and "code" not in changes else self.code,
            "entry": self.entry,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown package fields {sorted(unknown)}")
        fields.update(changes)
        return ModelPackage(**fields)

    # --- weight arithmetic (the package's own code, Dafne-style) ------------------------------------

    def delta(self, base: ModelPackage | Sequence[np.ndarray]) -> list[np.ndarray]:
        """``self.weights - base.weights``: what this version learned on top of ``base``."""
        if isinstance(base, ModelPackage):
            self._same_family(base)
        return list(self._fn("delta")(self.weights, _weights_of(base)))

    def merge_linear(self, update: ModelPackage | Sequence[np.ndarray], weight: float = 0.5) -> ModelPackage:
        """Dafne's merge ``(1-weight)·self + weight·update`` as version+1."""
        merged = self._fn("linear_merge")(self.weights, _weights_of(update), weight)
        return self.derive(merged, {"kind": "merge", "rule": "linear", "weight": weight, **_source(update)})

    def merge_delta(
        self,
        base: ModelPackage | Sequence[np.ndarray],
        update: ModelPackage | Sequence[np.ndarray],
        staleness: int,
        discount: float = 0.5,
        weight: float = 0.5,
    ) -> ModelPackage:
        """Apply what ``update`` learned on ``base`` to this (newer) version, discounted by staleness."""
        merged = self._fn("delta_merge")(
            self.weights, _weights_of(base), _weights_of(update), staleness, discount, weight
        )
        record = {"kind": "merge", "rule": "delta", "staleness": staleness, "discount": discount, "weight": weight}
        return self.derive(merged, {**record, **_source(update)})

    def merge_partial(
        self,
        update: ModelPackage | Sequence[np.ndarray],
        representation: Sequence[str] = ("enc",),
        weight: float = 0.5,
        task_from: str = "current",
    ) -> ModelPackage:
        """SegViz merge: representation layers averaged, task layers kept from ``task_from``."""
        merged = self._fn("partial_merge")(
            self.weights, _weights_of(update), self.weight_names, tuple(representation), weight, task_from
        )
        record = {"kind": "merge", "rule": "partial", "representation": list(representation), "weight": weight}
        return self.derive(merged, {**record, "task_from": task_from, **_source(update)})

    def _same_family(self, other: ModelPackage) -> None:
        if other.family_id != self.family_id:
            raise PackageError(f"{other!r} is of another model family than {self!r}")

    # --- state --------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The plain dict that is pickled (builtins only; weights as ``.npz`` bytes)."""
        return {
            "format": STATE_FORMAT,
            "family_id": self.family_id,
            "name": self.name,
            "region": self.region,
            "version": self.version,
            "parent_version": self.parent_version,
            "labels": self.labels,
            "input_spec": self.input_spec.to_dict(),
            "config": self.config,
            "weight_names": self.weight_names,
            "weights_npz": weights_to_npz(self.weights),
            "metadata": self.metadata,
            "code": dict(self.code),
            "entry": dict(self.entry),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ModelPackage:
        """Inverse of :meth:`to_state`."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise PackageError(f"package payload is not a {STATE_FORMAT} state")
        try:
            return cls(
                family_id=state["family_id"],
                name=state["name"],
                region=state["region"],
                version=state["version"],
                parent_version=state["parent_version"],
                labels=state["labels"],
                input_spec=state["input_spec"],
                config=state["config"],
                weights=weights_from_npz(state["weights_npz"]),
                weight_names=state["weight_names"],
                metadata=state["metadata"],
                code=state["code"],
                entry=state["entry"],
            )
        except KeyError as exc:
            raise PackageError(f"package payload lacks {exc}") from None


def _weights_of(obj: ModelPackage | Sequence[np.ndarray]) -> list[np.ndarray]:
    return list(obj.weights) if isinstance(obj, ModelPackage) else [np.asarray(w) for w in obj]


def _source(obj: ModelPackage | Sequence[np.ndarray]) -> dict[str, Any]:
    return {"update_version": obj.version, "update_name": obj.name} if isinstance(obj, ModelPackage) else {}


CATALOGUE_REGIONS = ("leg", "thigh")
_LABEL_FIELDS = ("value", "key", "name", "side", "snomed_code", "snomed_meaning", "colour")


def check_labels(region: str, labels: Sequence[Mapping[str, Any]], limbs: str) -> int:
    """Validate a package's label table; returns the classes the network predicts besides background.

    A catalogue region (``leg``, ``thigh``) must carry its catalogue labels in value order. Any other region
    carries its own table: values ``1..K`` in order, unique non-empty keys and names, an RGB colour, a
    SNOMED CT code of digits or None; with ``limbs="split"`` the first half is the right side and the second
    half the same structures on the left.
    """
    if not isinstance(region, str) or not region.strip():
        raise PackageError("a model package needs a non-empty region")
    values = [int(lab.get("value", -1)) for lab in labels]
    if region in CATALOGUE_REGIONS:
        expected = [_label_dict(lab) for lab in region_labels(region)]
        if values != [lab["value"] for lab in expected]:
            raise PackageError(f"labels must be the {len(expected)} labels of region {region!r} in value order")
    else:
        if not labels or values != list(range(1, len(labels) + 1)):
            raise PackageError(f"labels of region {region!r} must have values 1..{len(labels)} in order")
        if len(labels) > 254:
            raise PackageError("at most 254 labels")
        for lab in labels:
            missing = [f for f in _LABEL_FIELDS if f not in lab]
            if missing:
                raise PackageError(f"label {lab.get('value')} lacks {missing}")
            if not str(lab["key"]).strip() or not str(lab["name"]).strip():
                raise PackageError(f"label {lab['value']} needs a key and a name")
            code = lab["snomed_code"]
            if code is not None and not str(code).isdigit():
                raise PackageError(f"label {lab['key']}: SNOMED CT code must be digits or null, got {code!r}")
            colour = lab["colour"]
            if len(colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour):
                raise PackageError(f"label {lab['key']}: colour must be three integers 0..255, got {colour!r}")
        keys = [str(lab["key"]) for lab in labels]
        if len(set(keys)) != len(keys):
            raise PackageError("label keys must be unique")
    if limbs == "split":
        sides = [lab.get("side") for lab in labels]
        half = len(labels) // 2
        if len(labels) % 2 or sides != ["right"] * half + ["left"] * half:
            raise PackageError("a split-limb model needs its labels as n right-side then the same n left-side")
        return half
    return len(labels)


def _label_dict(lab: Any) -> dict[str, Any]:
    return {
        "value": lab.value,
        "key": lab.key,
        "name": lab.display_name,
        "side": lab.side,
        "snomed_code": lab.muscle.snomed_code,
        "snomed_meaning": lab.muscle.snomed_meaning,
        "colour": list(lab.muscle.colour),
    }


def create(
    region: str,
    name: str | None = None,
    *,
    input_spec: InputSpec | Mapping[str, Any] | None = None,
    network: Mapping[str, Any] | None = None,
    learning: Mapping[str, Any] | None = None,
    seed: int = 0,
    family_id: str | None = None,
    code: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    labels: Sequence[Mapping[str, Any]] | None = None,
) -> ModelPackage:
    """A new, untrained version-0 package for ``region`` (weights initialised by the package's code).

    ``labels`` is the label table of a region outside the catalogue (see :func:`check_labels`); a catalogue
    region takes its catalogue labels.
    """
    if labels is None:
        table = [_label_dict(lab) for lab in region_labels(region)]
    else:
        table = [{f: lab.get(f) for f in _LABEL_FIELDS} for lab in labels]
    spec = input_spec if isinstance(input_spec, InputSpec) else InputSpec.from_dict(input_spec or {})
    n_classes = check_labels(region, table, spec.limbs)
    config = {"n_muscles": n_classes, "network": dict(network or {}), "learning": dict(learning or {})}
    executed = PackageCode.get(code if code is not None else default_code())
    build = executed.function(DEFAULT_ENTRY["build"])
    weights, names = build({**config, "input_spec": spec.to_dict()}, seed)
    meta = {
        "created_at": _now(),
        "frameworks": framework_versions(),
        "history": [{"kind": "init", "seed": seed, "version": 0, "at": _now()}],
        **dict(metadata or {}),
    }
    return ModelPackage(
        family_id=family_id or str(uuid.uuid4()),
        name=name or region,
        region=region,
        version=0,
        parent_version=None,
        labels=table,
        input_spec=spec,
        config=config,
        weights=weights,
        weight_names=names,
        metadata=meta,
        code=executed,
    )


# --- bytes ----------------------------------------------------------------------------------------


def dumps(pkg: ModelPackage) -> bytes:
    """The package as an unsigned envelope (sign it with :func:`sign` to make it loadable elsewhere)."""
    import dill

    payload = dill.dumps(pkg.to_state(), protocol=4)
    return wrap(payload, pkg.manifest())


def read_manifest(data: bytes) -> dict[str, Any]:
    """The manifest and trust facts of an envelope, reading JSON only (safe for any bytes)."""
    env = parse(data)
    sig = env.signature
    return {
        **env.manifest,
        "payload_sha256": env.header["payload_sha256"],
        "payload_size": env.header["payload_size"],
        "signed_by": sig.get("key_id") if sig else None,
        "zoo": env.header["payload_sha256"] in zoo_trusted_sha256(),
    }


def zoo_trusted_sha256() -> frozenset[str]:
    """Payload sha256 of the shipped zoo packages (models/zoo/manifest.json, shipped with the code)."""
    try:
        manifest = json.loads(ZOO_MANIFEST.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset()
    return frozenset(str(entry["payload_sha256"]) for entry in manifest.get("packages", {}).values())


def load(data: bytes, trusted_keys: Sequence[Any] = (), *, allow_zoo: bool = True) -> ModelPackage:
    """Verify, then unpickle, a package.

    The envelope is checked first (JSON only): its payload must be listed in the shipped zoo manifest
    (when ``allow_zoo``) or signed by one of ``trusted_keys`` (Ed25519 public keys). Only then does dill
    read the payload. Raises :class:`UntrustedPackage` or :class:`PackageError`.
    """
    import dill

    env = verify(data, trusted_keys, zoo_trusted_sha256() if allow_zoo else ())
    state = dill.loads(env.payload)  # noqa: S301 - verified above
    pkg = ModelPackage.from_state(state)
    if pkg.manifest()["weights_sha256"] != env.manifest.get("weights_sha256"):
        raise PackageError("the payload's weights do not match the manifest")
    return pkg


loads = load
