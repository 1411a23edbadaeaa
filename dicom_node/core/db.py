"""The node's index: SQLAlchemy 2 models of studies, series, instances and jobs.

SQLite in WAL mode by default (``synchronous=FULL``: a commit is on disk when it returns); PostgreSQL
(``postgresql+psycopg://…``) for several processes or hosts; both are tested. All times are naive UTC
(:func:`utcnow`). The schema is created and upgraded by Alembic (:func:`dicom_node.core.engine.migrate`,
scripts in ``dicom_node/core/migrations``), never by
``create_all`` on a database that already holds data.

Files are recorded relative to ``node.storage_dir`` (:func:`stored_path` / :func:`resolve_path`), so a
backup of the storage folder restored at another path works as it is.

Study state changes go through :func:`set_study_state` only: it checks the transition, stamps
``completed_at`` / ``finished_at`` and records the reason, so a restart resumes exactly where the process
stopped and the retention rules see when a study was finished.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time as naive UTC, the form every timestamp in the index has."""
    return datetime.now(UTC).replace(tzinfo=None)


class StudyState(StrEnum):
    """Where a study is on its journey (``RECEIVING → COMPLETE → SEGMENTING → PENDING_REVIEW → ...``)."""

    RECEIVING = "RECEIVING"
    COMPLETE = "COMPLETE"
    SEGMENTING = "SEGMENTING"
    PENDING_REVIEW = "PENDING_REVIEW"
    APPROVED = "APPROVED"
    EXPORTED = "EXPORTED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


class SeriesState(StrEnum):
    """A series is routed to a model (or not) when its first instance arrives; the pipeline moves it on."""

    ROUTED = "ROUTED"
    UNROUTED = "UNROUTED"
    SEGMENTING = "SEGMENTING"
    SEGMENTED = "SEGMENTED"
    FAILED = "FAILED"
    #: A SEG this node wrote, sent back by the PACS (e.g. a study-level auto-routing rule): kept, not routed,
    #: not listed as unrouted.
    OWN_RESULT = "OWN_RESULT"


class JobState(StrEnum):
    """Job lifecycle: FAILED jobs wait for ``next_run_at`` and are retried; DEAD ones need a person."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    DEAD = "DEAD"


#: States after which the study is finished (its received images fall under retention).
FINISHED_STATES = frozenset({StudyState.EXPORTED, StudyState.REJECTED})

#: Allowed study transitions; anything else needs ``force=True`` (an operator's explicit override).
STUDY_TRANSITIONS: dict[StudyState, frozenset[StudyState]] = {
    StudyState.RECEIVING: frozenset({StudyState.COMPLETE, StudyState.FAILED, StudyState.REJECTED}),
    StudyState.COMPLETE: frozenset(
        {StudyState.SEGMENTING, StudyState.PENDING_REVIEW, StudyState.FAILED, StudyState.REJECTED}
    ),
    StudyState.SEGMENTING: frozenset(
        {StudyState.PENDING_REVIEW, StudyState.FAILED, StudyState.COMPLETE, StudyState.REJECTED}
    ),
    StudyState.PENDING_REVIEW: frozenset(
        {StudyState.APPROVED, StudyState.REJECTED, StudyState.SEGMENTING, StudyState.FAILED}
    ),
    StudyState.APPROVED: frozenset({StudyState.EXPORTED, StudyState.FAILED, StudyState.PENDING_REVIEW}),
    StudyState.EXPORTED: frozenset({StudyState.APPROVED, StudyState.PENDING_REVIEW}),  # back to review: amend
    StudyState.REJECTED: frozenset(),
    StudyState.FAILED: frozenset(
        {
            StudyState.COMPLETE,
            StudyState.SEGMENTING,
            StudyState.PENDING_REVIEW,
            StudyState.APPROVED,
            StudyState.REJECTED,
        }
    ),
}


class InvalidTransition(ValueError):
    """A study state change that the journey does not allow."""


class Base(DeclarativeBase):
    """Declarative base of every table of the node (other modules may add tables to it)."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class Study(Base):
    """One study as received; ``associations_open`` counts associations still delivering to it."""

    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    StudyInstanceUID: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    PatientName: Mapped[str | None] = mapped_column(String(330))
    PatientID: Mapped[str | None] = mapped_column(String(64))
    StudyDescription: Mapped[str | None] = mapped_column(String(64))
    StudyDate: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(32), default=StudyState.RECEIVING, index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    associations_open: Mapped[int] = mapped_column(Integer, default=0)
    associations_ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    files_deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")


class Series(Base):
    """One series; ``model`` is the routed model (``None``: unrouted, kept for retention.unrouted_days)."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    SeriesNumber: Mapped[int | None] = mapped_column(Integer)
    Modality: Mapped[str | None] = mapped_column(String(16))
    SeriesDescription: Mapped[str | None] = mapped_column(String(64))
    BodyPartExamined: Mapped[str | None] = mapped_column(String(64))
    called_ae: Mapped[str | None] = mapped_column(String(16))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), default=SeriesState.ROUTED, index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    files_deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: When the series' newest instance arrived (a draft older than this is out of date).
    last_instance_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Instances arrived after a draft that has saved corrections: approval waits for a person's decision.
    changed_since_draft: Mapped[bool] = mapped_column(default=False, server_default=false())

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.id")


class Instance(Base):
    """One stored SOP instance; ``path`` is absolute and the file is exactly what the sender sent."""

    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    SOPInstanceUID: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    SOPClassUID: Mapped[str] = mapped_column(String(64))
    TransferSyntaxUID: Mapped[str] = mapped_column(String(64))
    InstanceNumber: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One side effect in the persistent queue (see :mod:`dicom_node.core.jobs`)."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    next_run_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: The process holding a RUNNING job (``host:pid:start``; kept afterwards: who ran it last).
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    #: Until when the claim holds without a heartbeat; a RUNNING job past it is taken over.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for ``laurel status --json`` and the API)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "payload": self.payload,
            "dedupe_key": self.dedupe_key,
            "attempts": self.attempts,
            "next_run_at": _iso(self.next_run_at),
            "last_error": self.last_error,
            "result": self.result,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "claimed_by": self.claimed_by,
            "lease_until": _iso(self.lease_until),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def stored_path(root: Path, path: Path | str) -> str:
    """How the index records ``path``: relative to ``root`` (POSIX) when inside it, else absolute."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve_path(root: Path, stored: str) -> Path:
    """The file a recorded path names: relative paths live under ``root``; absolute ones (0.1 rows) as they are."""
    path = Path(stored)
    return path if path.is_absolute() else Path(root) / path


def relativize_paths(engine: Engine, storage_dir: Path, models_dir: Path) -> int:
    """Rewrite absolute paths recorded by Laurel 0.1 under ``storage_dir`` (``models_dir`` for packages) as
    relative ones, so the storage folder can move; returns how many rows changed. Idempotent."""
    from sqlalchemy import text

    columns = {
        "instance": ["path"],
        "series_result": ["draft_labels_path", "draft_seg_path", "corrected_labels_path", "approved_seg_path"],
        "model_revision": ["path"],
    }
    changed = 0
    with engine.begin() as conn:
        for table, names in columns.items():
            root = (models_dir if table == "model_revision" else storage_dir).resolve().as_posix().rstrip("/") + "/"
            for name in names:
                result = conn.execute(
                    # table and column names are the constants above; the values are bound
                    text(f"UPDATE {table} SET {name} = substr({name}, :n) WHERE substr({name}, 1, :m) = :root"),  # noqa: S608
                    {"n": len(root) + 1, "m": len(root), "root": root},
                )
                changed += int(result.rowcount or 0)
    if changed:
        logger.info("%d file paths recorded by Laurel 0.1 are now relative to the storage folder", changed)
    return changed


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory that keeps attribute values readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on any exception."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def set_study_state(
    session: Session,
    study: Study,
    state: StudyState | str,
    reason: str | None = None,
    *,
    force: bool = False,
) -> Study:
    """Move ``study`` to ``state`` (the one place study states change).

    Raises :class:`InvalidTransition` for a move the journey does not allow unless ``force``.
    Stamps ``completed_at`` on COMPLETE and ``finished_at`` on EXPORTED/REJECTED (retention counts from
    it); ``reason`` is kept in ``failure_reason`` (cleared when the new state is not FAILED/REJECTED and
    no reason is given). The caller commits.
    """
    new = StudyState(state)
    old = StudyState(study.state)
    if new != old and not force and new not in STUDY_TRANSITIONS[old]:
        allowed = ", ".join(sorted(STUDY_TRANSITIONS[old])) or "none"
        raise InvalidTransition(f"study {study.id} is {old}; it can move to {allowed}, not {new}")
    now = utcnow()
    study.state = new
    if reason is not None:
        study.failure_reason = reason
    elif new not in (StudyState.FAILED, StudyState.REJECTED):
        study.failure_reason = None
    if new == StudyState.COMPLETE and study.completed_at is None:
        study.completed_at = now
    if new in FINISHED_STATES:
        study.finished_at = now
    elif old in FINISHED_STATES:
        study.finished_at = None
    study.updated_at = now
    session.add(study)
    logger.info("study %s: %s -> %s%s", study.id, old, new, f" ({reason})" if reason else "")
    return study
