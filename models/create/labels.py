"""The label table of a site's own data: names, SNOMED CT codes, colours and sides of any label set.

A table comes from a file (CSV or JSON, see :func:`read_table`) or is derived from the segments of the
site's DICOM-SEGs (:func:`table_from_segments`). When its keys are exactly those of a catalogue region of
:mod:`models.labels` (``leg``, ``thigh``), the catalogue table is used, so the model writes the same
segments as the default models.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.labels import region_labels

logger = logging.getLogger(__name__)

MAX_TABLE_BYTES = 1 << 20
MAX_LABELS = 254
# A qualitative palette for labels without a colour (Sasha Trubetzkoy's 20 distinct colours).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)
SIDES = ("right", "left")


class LabelTableError(ValueError):
    """A label table that cannot be used (with what to fix)."""


@dataclass(frozen=True)
class LabelDef:
    """One label: value in the mask, machine key, human name, SNOMED CT code, colour and side."""

    value: int
    key: str
    name: str
    snomed_code: str | None = None
    snomed_meaning: str | None = None
    colour: tuple[int, int, int] = (128, 128, 128)
    side: str | None = None

    def as_package_label(self) -> dict[str, Any]:
        """The dict a :class:`models.package.ModelPackage` carries."""
        d = asdict(self)
        d["colour"] = list(self.colour)
        return d


@dataclass(frozen=True)
class LabelTable:
    """An ordered label set; ``region`` is the catalogue region it equals, else None."""

    labels: tuple[LabelDef, ...]
    region: str | None = None

    def __post_init__(self) -> None:
        values = [lab.value for lab in self.labels]
        if not self.labels or values != list(range(1, len(values) + 1)):
            raise LabelTableError(f"label values must be 1..{len(values)} without gaps, got {values}")
        if len(self.labels) > MAX_LABELS:
            raise LabelTableError(f"at most {MAX_LABELS} labels, got {len(self.labels)}")
        keys = [lab.key for lab in self.labels]
        if len(set(keys)) != len(keys):
            raise LabelTableError(f"label keys must be unique: {sorted({k for k in keys if keys.count(k) > 1})}")

    def by_value(self) -> dict[int, LabelDef]:
        """``{value: label}``."""
        return {lab.value: lab for lab in self.labels}

    def splittable(self) -> bool:
        """True when the labels are n right-side structures followed by the same n on the left."""
        n = len(self.labels) // 2
        if len(self.labels) % 2 or n == 0:
            return False
        right, left = self.labels[:n], self.labels[n:]
        return all(r.side == "right" and lf.side == "left" for r, lf in zip(right, left, strict=True)) and [
            _base(r) for r in right
        ] == [_base(lf) for lf in left]

    def find(self, key: str | None, name: str | None, code: str | None, side: str | None) -> LabelDef | None:
        """The label a segment names: by key, by name (case-insensitive), else by SNOMED code + side when
        exactly one label carries them."""
        for text in (key, name):
            if text:
                low = text.strip().lower()
                for lab in self.labels:
                    if low in (lab.key.lower(), lab.name.lower(), slug(lab.name)):
                        return lab
                low_slug = slug(text)
                for lab in self.labels:
                    if low_slug == lab.key.lower():
                        return lab
        if code:
            hits = [lab for lab in self.labels if lab.snomed_code == code and lab.side == side]
            if len(hits) == 1:
                return hits[0]
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The table as JSON-able dicts."""
        return [lab.as_package_label() for lab in self.labels]


def _base(lab: LabelDef) -> str:
    key = lab.key
    for side in SIDES:
        key = key.removesuffix(f"_{side}")
    return key


def slug(text: str) -> str:
    """A machine key from a human name: ``"Soleus (right)"`` → ``soleus_right``."""
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def catalogue_table(region: str) -> LabelTable:
    """The catalogue labels of ``leg`` or ``thigh`` as a table."""
    return LabelTable(
        tuple(
            LabelDef(
                value=lab.value,
                key=lab.key,
                name=lab.display_name,
                snomed_code=lab.muscle.snomed_code,
                snomed_meaning=lab.muscle.snomed_meaning,
                colour=lab.muscle.colour,
                side=lab.side,
            )
            for lab in region_labels(region)
        ),
        region=region,
    )


def match_catalogue(keys: Sequence[str]) -> LabelTable | None:
    """The catalogue table whose keys include every key in ``keys`` (the data may miss a few labels)."""
    wanted = {k.lower() for k in keys}
    for region in ("leg", "thigh"):
        table = catalogue_table(region)
        if wanted and wanted <= {lab.key for lab in table.labels}:
            return table
    return None


def _colour(value: Any, index: int) -> tuple[int, int, int]:
    if value is None or value == "":
        return PALETTE[index % len(PALETTE)]
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
            return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))
        parts = [p for p in re.split(r"[\s,;/]+", text) if p]
    else:
        parts = list(value)
    try:
        rgb = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise LabelTableError(f"colour {value!r} is not '#rrggbb' or three integers 0..255") from None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise LabelTableError(f"colour {value!r} is not three integers 0..255")
    return (rgb[0], rgb[1], rgb[2])


def _label_from_row(row: Mapping[str, Any], index: int) -> LabelDef:
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    try:
        value = int(str(lowered.get("value", "")).strip())
    except ValueError:
        raise LabelTableError(f"row {index + 1}: 'value' must be an integer 1..{MAX_LABELS}") from None
    name = str(lowered.get("name") or "").strip()
    if not name:
        raise LabelTableError(f"row {index + 1}: a label needs a 'name'")
    key = str(lowered.get("key") or "").strip() or slug(name)
    code = str(lowered.get("snomed_code") or lowered.get("snomed") or "").strip() or None
    if code is not None and not code.isdigit():
        raise LabelTableError(f"label {name!r}: SNOMED CT code must be digits, got {code!r}")
    meaning = str(lowered.get("snomed_meaning") or "").strip() or None
    side = str(lowered.get("side") or "").strip().lower() or None
    if side is not None and side not in SIDES:
        raise LabelTableError(f"label {name!r}: side must be 'right', 'left' or empty, got {side!r}")
    return LabelDef(
        value, key, name, code, meaning or (name if code else None), _colour(lowered.get("colour"), index), side
    )


def read_table(path: Path) -> LabelTable:
    """A label table from CSV (header ``value,name[,key,snomed_code,snomed_meaning,colour,side]``) or JSON
    (a list of such objects, or ``{"labels": [...]}``); colours as ``#rrggbb`` or ``"r g b"``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LabelTableError(f"cannot read the label table {path}: {exc}") from None
    if size > MAX_TABLE_BYTES:
        raise LabelTableError(f"the label table {path} is {size} bytes; at most {MAX_TABLE_BYTES} are read")
    text = path.read_text(encoding="utf-8-sig")
    rows: list[Mapping[str, Any]]
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelTableError(f"{path} is not JSON: {exc}") from None
        data = data.get("labels") if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise LabelTableError(f"{path}: expected a list of label objects or {{'labels': [...]}}")
        rows = data
    else:
        rows = list(csv.DictReader(text.splitlines()))
    if len(rows) > MAX_LABELS:
        raise LabelTableError(f"{path} has {len(rows)} labels; at most {MAX_LABELS}")
    labels = sorted((_label_from_row(r, i) for i, r in enumerate(rows)), key=lambda lab: lab.value)
    catalogue = match_catalogue([lab.key for lab in labels])
    if catalogue is not None and [lab.key for lab in labels] == [lab.key for lab in catalogue.labels]:
        return catalogue
    return LabelTable(tuple(labels))


@dataclass(frozen=True)
class SegmentInfo:
    """What a DICOM-SEG segment says it is."""

    key: str | None
    name: str
    snomed_code: str | None
    snomed_meaning: str | None
    side: str | None
    colour: tuple[int, int, int] | None


def table_from_segments(segments: Sequence[SegmentInfo]) -> LabelTable:
    """Derive a table from segments in the order first seen: the catalogue table when every segment is a
    catalogue label; n right then the same n left when the segments pair up by side; else in order."""
    keys: list[str] = []
    first: dict[str, SegmentInfo] = {}
    for seg in segments:
        key = (seg.key or slug(seg.name)).lower()
        if key and key not in first:
            first[key] = seg
            keys.append(key)
    if not keys:
        raise LabelTableError("the SEGs name no segment")
    catalogue = match_catalogue(keys)
    if catalogue is not None:
        return catalogue
    sided = {k: first[k].side for k in keys}
    right = [k for k in keys if sided[k] == "right"]
    left = [k for k in keys if sided[k] == "left"]
    order = keys
    if right and len(right) + len(left) == len(keys):
        base = {k: k.removesuffix("_right").removesuffix("_left") for k in keys}
        by_base_left = {base[k]: k for k in left}
        if sorted(base[k] for k in right) == sorted(by_base_left):
            order = right + [by_base_left[base[k]] for k in right]
    labels = []
    for i, key in enumerate(order):
        seg = first[key]
        colour = seg.colour if seg.colour is not None else PALETTE[i % len(PALETTE)]
        labels.append(LabelDef(i + 1, key, seg.name, seg.snomed_code, seg.snomed_meaning, colour, seg.side))
    return LabelTable(tuple(labels))
