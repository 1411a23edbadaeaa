"""Plain records of what the node's HTTP API returns (CONTRACTS.md "node HTTP API"); no Qt, no HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ProtocolError(ValueError):
    """The node answered something that does not follow the API contract."""


def _req(d: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except (KeyError, TypeError):
        raise ProtocolError(f"the node's {what} lacks the field {key!r}") from None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Segment:
    """One label value of a series: a muscle on one side, with its display colour."""

    value: int
    key: str
    name: str
    colour: tuple[int, int, int]
    side: str | None = None
    snomed_code: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Segment:
        """Parse one entry of ``GET /series/{id}/segments``."""
        value = int(_req(d, "value", "segment"))
        if not 1 <= value <= 255:
            raise ProtocolError(f"segment value {value} is outside 1..255")
        colour = _req(d, "colour", "segment")
        if not isinstance(colour, list | tuple) or len(colour) != 3:
            raise ProtocolError(f"segment {value} has a colour that is not [r, g, b]: {colour!r}")
        r, g, b = (max(0, min(255, int(c))) for c in colour)
        return cls(
            value=value,
            key=str(_req(d, "key", "segment")),
            name=str(d.get("name") or d.get("key")),
            colour=(r, g, b),
            side=d.get("side"),
            snomed_code=d.get("snomed_code"),
        )


@dataclass(frozen=True)
class ModelRef:
    """A model name and version that produced a draft."""

    name: str
    version: int | None


@dataclass(frozen=True)
class SeriesSummary:
    """``SeriesSummary`` of the API."""

    id: int
    SeriesInstanceUID: str
    SeriesDescription: str
    Modality: str
    instance_count: int
    model: str | None
    model_version: int | None
    state: str
    failure_reason: str | None
    has_draft: bool
    has_corrected: bool
    changed_since_draft: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SeriesSummary:
        """Parse one entry of ``series`` in ``GET /studies/{id}``."""
        return cls(
            id=int(_req(d, "id", "series summary")),
            SeriesInstanceUID=str(d.get("SeriesInstanceUID") or ""),
            SeriesDescription=str(d.get("SeriesDescription") or ""),
            Modality=str(d.get("Modality") or ""),
            instance_count=int(d.get("instance_count") or 0),
            model=d.get("model"),
            model_version=_opt_int(d.get("model_version")),
            state=str(d.get("state") or ""),
            failure_reason=d.get("failure_reason"),
            has_draft=bool(d.get("has_draft")),
            has_corrected=bool(d.get("has_corrected")),
            changed_since_draft=bool(d.get("changed_since_draft")),
        )

    @property
    def title(self) -> str:
        """Short text for a series chooser."""
        desc = self.SeriesDescription or self.SeriesInstanceUID or f"series {self.id}"
        model = f" — {self.model} v{self.model_version}" if self.model else ""
        return f"{desc}{model}"


@dataclass(frozen=True)
class StudySummary:
    """``StudySummary`` of the API (plus ``series`` when read from ``GET /studies/{id}``)."""

    id: int
    StudyInstanceUID: str
    PatientName: str
    PatientID: str
    StudyDescription: str
    StudyDate: str
    state: str
    failure_reason: str | None
    received_at: str | None
    completed_at: str | None
    series_count: int
    instance_count: int
    models: tuple[ModelRef, ...] = ()
    series: tuple[SeriesSummary, ...] = field(default=())
    in_progress_by: str | None = None  # the operator whose corrections are saved but not decided (optional)
    approved_by: str | None = None  # optional in the API

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StudySummary:
        """Parse a ``StudySummary`` (with ``series`` if present)."""
        models = tuple(
            ModelRef(str(_req(m, "name", "model reference")), _opt_int(m.get("version"))) for m in d.get("models") or ()
        )
        series = tuple(SeriesSummary.from_json(s) for s in d.get("series") or ())
        return cls(
            id=int(_req(d, "id", "study summary")),
            StudyInstanceUID=str(d.get("StudyInstanceUID") or ""),
            PatientName=str(d.get("PatientName") or ""),
            PatientID=str(d.get("PatientID") or ""),
            StudyDescription=str(d.get("StudyDescription") or ""),
            StudyDate=str(d.get("StudyDate") or ""),
            state=str(_req(d, "state", "study summary")),
            failure_reason=d.get("failure_reason"),
            received_at=d.get("received_at"),
            completed_at=d.get("completed_at"),
            series_count=int(d.get("series_count") or len(series)),
            instance_count=int(d.get("instance_count") or 0),
            models=models,
            series=series,
            in_progress_by=_opt_str(d.get("in_progress_by")),
            approved_by=_opt_str(d.get("approved_by")),
        )

    @property
    def models_text(self) -> str:
        """``leg v3, thigh v1``."""
        return ", ".join(m.name if m.version is None else f"{m.name} v{m.version}" for m in self.models)


@dataclass(frozen=True)
class Volume:
    """A series' image, float32 ``(z, y, x)``, with spacing ``(dz, dy, dx)`` mm and origin ``(x, y, z)``."""

    image: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)


def default_segments(values: list[int] | np.ndarray, keys: Mapping[int, str] | None = None) -> list[Segment]:
    """Segments with distinct colours for label values that came without a catalogue (offline files)."""
    palette = [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    ]  # fmt: skip
    out = []
    for i, v in enumerate(sorted(int(v) for v in values if int(v) != 0)):
        key = (keys or {}).get(v, f"label_{v}")
        out.append(Segment(v, key, key.replace("_", " ").capitalize(), palette[i % len(palette)]))
    return out
