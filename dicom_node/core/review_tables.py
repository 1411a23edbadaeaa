"""Tables of the review workflow: segmentation results per series, operator tokens and the audit log.

They live on the index's :class:`~dicom_node.core.db.Base`, so ``make_engine`` creates them with the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dicom_node.core.db import Base, utcnow


class SeriesResult(Base):
    """What the pipeline and the operator made of one series: the draft, the correction, the approval.

    Files live under ``storage_dir/derived/<study id>/<series id>/``: ``draft_labels-<SOP UID>.npy``,
    ``draft_seg-<SOP UID>.dcm``, ``corrected_labels.npy``, and per approval ``approved_labels-<SOP UID>.npy`` and
    ``approved_seg-<SOP UID>.dcm``; every ``*_path`` is recorded relative to ``storage_dir``.
    ``approved_seg_sop_uid`` identifies the approval (the learning job's idempotency key).
    """

    __tablename__ = "series_result"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), unique=True, index=True)
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    model_revision: Mapped[int] = mapped_column(Integer)
    draft_labels_path: Mapped[str] = mapped_column(Text)
    draft_seg_path: Mapped[str] = mapped_column(Text)
    draft_seg_sop_uid: Mapped[str] = mapped_column(String(64))
    corrected_labels_path: Mapped[str | None] = mapped_column(Text)
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime)
    corrected_by: Mapped[str | None] = mapped_column(String(128))
    approved_labels_path: Mapped[str | None] = mapped_column(Text)
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime)
    approved_seg_path: Mapped[str | None] = mapped_column(Text)
    #: While an approved study is amended: the approved SEG the next approval supersedes (and references).
    superseded_seg_path: Mapped[str | None] = mapped_column(Text)
    approved_seg_sop_uid: Mapped[str | None] = mapped_column(String(64))
    dice: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    segmentation_seconds: Mapped[float | None] = mapped_column()
    #: When the draft was made (each re-segmentation moves it); instances newer than this are not in it.
    drafted_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Slices of the series when the draft was made.
    draft_slices: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A bearer token of one person with a role; only its SHA-256 is stored (tokens are 256-bit random)."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator: Mapped[str] = mapped_column(String(128), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="operator", server_default="operator")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEvent(Base):
    """One decision or administrative act: who, when, what, on which study (internal ids only)."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    operator: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(Integer, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "id": self.id,
            "at": self.at.isoformat() + "Z",
            "operator": self.operator,
            "action": self.action,
            "study_id": self.study_id,
            "detail": self.detail,
        }
