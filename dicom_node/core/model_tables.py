"""The model registry's tables: every package revision the node may apply, and each model's state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dicom_node.core.db import Base, utcnow


class ModelRevision(Base):
    """One package file the node may apply."""

    __tablename__ = "model_revision"
    __table_args__ = (
        UniqueConstraint("name", "revision"),
        Index("ix_model_revision_source_key", "name", "source_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    package_version: Mapped[int] = mapped_column(Integer)
    federation_version: Mapped[int] = mapped_column(Integer)
    parent_revision: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    source_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "revision": self.revision,
            "package_version": self.package_version,
            "federation_version": self.federation_version,
            "parent_revision": self.parent_revision,
            "source": self.source,
            "source_key": self.source_key,
            "sha256": self.sha256,
            "note": self.note,
            "created_at": self.created_at.isoformat() + "Z",
        }


class ModelState(Base):
    """Which revision of a model is active, whether a person pinned it, and who may change it now."""

    __tablename__ = "model_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    active_revision: Mapped[int] = mapped_column(Integer)
    pinned: Mapped[bool] = mapped_column(default=False)
    lease_job_id: Mapped[int | None] = mapped_column(Integer)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
