"""Request and response bodies of the node API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    """A model and the version that made a draft."""

    name: str
    version: int | None = None


class SeriesSummary(BaseModel):
    """One series of a study as the worklist shows it."""

    id: int
    SeriesInstanceUID: str
    SeriesNumber: int | None = None
    SeriesDescription: str | None = None
    Modality: str | None = None
    instance_count: int
    model: str | None = None
    model_version: int | None = None
    state: str
    failure_reason: str | None = None
    has_draft: bool = False
    has_corrected: bool = False
    changed_since_draft: bool = Field(False, description="images arrived after the corrected draft: re-segment")
    dice: dict[str, Any] | None = None


class StudySummary(BaseModel):
    """One study of the worklist."""

    id: int
    StudyInstanceUID: str
    PatientName: str | None = None
    PatientID: str | None = None
    StudyDescription: str | None = None
    StudyDate: str | None = None
    state: str
    failure_reason: str | None = None
    received_at: str | None = None
    completed_at: str | None = None
    in_progress_by: str | None = Field(None, description="who saved corrections of this study awaiting review")
    approved_by: str | None = None
    approved_at: str | None = None
    series_count: int
    instance_count: int
    models: list[ModelRef] = Field(default_factory=list)


class StudyDetail(StudySummary):
    """A study with its series."""

    series: list[SeriesSummary] = Field(default_factory=list)


class StudyList(BaseModel):
    """The worklist."""

    studies: list[StudySummary]


class ApproveRequest(BaseModel):
    """An approval of the study the client has open (its StudyInstanceUID); the operator is the token's owner."""

    StudyInstanceUID: str | None = Field(None, max_length=64, description="must be the study's; 409 otherwise")
    comment: str | None = Field(None, max_length=2000)


class RejectRequest(BaseModel):
    """A rejection of the study the client has open needs a reason."""

    StudyInstanceUID: str | None = Field(None, max_length=64, description="must be the study's; 409 otherwise")
    reason: str = Field(min_length=1, max_length=2000)


class AmendRequest(BaseModel):
    """Reopen an approved study (the one the client has open) for correction; the reason is audited."""

    StudyInstanceUID: str | None = Field(None, max_length=64, description="must be the study's; 409 otherwise")
    reason: str = Field(min_length=1, max_length=2000)


class ResegmentRequest(BaseModel):
    """A new draft of the series the client has open (its SeriesInstanceUID)."""

    SeriesInstanceUID: str | None = Field(None, max_length=64, description="must be the series'; 409 otherwise")


class DecisionResponse(BaseModel):
    """The study's new state, the Dice per series (approve) and the jobs queued."""

    state: str
    dice: dict[str, Any] = Field(default_factory=dict)
    jobs: list[dict[str, Any]] = Field(default_factory=list)


class VersionRequest(BaseModel):
    """Pin or roll back to a model revision."""

    revision: int | None = Field(None, ge=1)
