"""Request and response bodies of the federation API (``/api/v1``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UpdateState = Literal["QUEUED", "VALIDATING", "ACCEPTED", "REJECTED", "FAILED"]

#: The only metadata keys an upload may carry (anything else, e.g. a DICOM attribute, is refused).
ALLOWED_METADATA_KEYS = frozenset({"model", "base_version", "n_slices", "local_dice", "client_version"})


class UpdateMetadata(BaseModel):
    """The JSON ``metadata`` part of an upload: exactly these keys, nothing about patients or images."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    base_version: int = Field(ge=0, description="the published version the site learned from")
    n_slices: int = Field(ge=1, le=100_000, description="slices the site learned from")
    local_dice: float | None = Field(
        None, ge=0.0, le=1.0, description="Dice of the draft against the operator's correction"
    )
    client_version: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.+-]*$")


class VersionOut(BaseModel):
    """A published version."""

    version: int
    parent_version: int | None
    sha256: str
    size: int
    dice: float
    created_at: dt.datetime
    strategy: str | None
    merged_updates: list[str]
    per_case_dice: dict[str, float] = Field(default_factory=dict)


class ModelSummary(BaseModel):
    """A model in the list."""

    name: str
    region: str
    latest_version: int | None
    sha256: str | None
    dice: float | None


class ModelList(BaseModel):
    """``GET /api/v1/models``."""

    models: list[ModelSummary]


class DicePoint(BaseModel):
    """One point of a model's validation Dice history."""

    version: int
    dice: float
    created_at: dt.datetime


class ModelInfo(ModelSummary):
    """``GET /api/v1/models/{name}``: latest version, every version, Dice history."""

    versions: list[VersionOut]
    dice_history: list[DicePoint]


class UpdateAccepted(BaseModel):
    """202 answer to an upload."""

    update_id: str
    state: UpdateState
    status_url: str


class UpdateStatus(BaseModel):
    """``GET /api/v1/updates/{id}``: where an update stands, and why."""

    update_id: str
    model: str
    base_version: int
    state: UpdateState
    version: int | None = Field(None, description="the published version (ACCEPTED)")
    reason: str | None = Field(None, description="why it was rejected or failed")
    candidate_dice: float | None = None
    merged_dice: float | None = None
    current_dice: float | None = None
    staleness: int | None = None
    n_slices: int
    local_dice: float | None
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class UpdateList(BaseModel):
    """``GET /api/v1/updates``: the caller's updates, newest first."""

    updates: list[UpdateStatus]


class UsageIn(BaseModel):
    """A usage statistic (Dafne: the Dice between the draft and the approved segmentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    version: int = Field(ge=0)
    dice: float = Field(ge=0.0, le=1.0)
    n_slices: int | None = Field(None, ge=1, le=100_000)
    client_version: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.+-]*$")


class UsageOut(BaseModel):
    """A recorded usage statistic."""

    site: str
    model: str
    version: int
    dice: float
    n_slices: int | None
    created_at: dt.datetime


class UsageSummary(BaseModel):
    """Per-model aggregate of usage statistics."""

    model: str
    count: int
    median_dice: float | None
    mean_dice: float | None


class UsageList(BaseModel):
    """``GET /api/v1/stats``."""

    stats: list[UsageOut]
    summary: list[UsageSummary]


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["ok", "degraded"]
    worker: bool
    queue_depth: int
    models: dict[str, int | None]
    public_key: str


class Problem(BaseModel):
    """An error body (FastAPI's ``detail``)."""

    detail: Any
