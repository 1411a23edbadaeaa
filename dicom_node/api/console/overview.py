"""What the overview page shows, read from the index: studies by state, the queue, intake, errors, disk.

Every number comes from rows (the API process shares nothing else with the intake and the workers), in a
few aggregate queries whose cost does not grow with what they return.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from dicom_node.core.db import Instance, Job, JobState, Series, Study, StudyState, utcnow

#: How far back the intake and queue charts look, and their resolution.
WINDOW = timedelta(hours=6)
BUCKET = timedelta(minutes=5)
_OPEN_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.FAILED, JobState.DEAD)


@dataclass(frozen=True)
class QueueRow:
    """One job kind: jobs waiting (queued), running, waiting for a retry (failed) and dead letters."""

    kind: str
    counts: dict[str, int]

    @property
    def depth(self) -> int:
        """Jobs not yet done: queued, running or waiting for a retry."""
        return sum(self.counts.get(s, 0) for s in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED))


@dataclass(frozen=True)
class ErrorRow:
    """A recent failure a person should read: a failed or dead job, or a failed study."""

    at: datetime
    what: str
    reason: str


@dataclass(frozen=True)
class DiskUse:
    """The file system of ``storage_dir`` and how much of it received images take."""

    path: Path
    total: int
    used: int
    free: int
    instances: int

    @property
    def used_fraction(self) -> float:
        """Used share of the file system (0..1)."""
        return self.used / self.total if self.total else 0.0


@dataclass
class Overview:
    """Everything on the overview page."""

    studies_by_state: list[tuple[str, int]]
    queue: list[QueueRow]
    received_last_hour: int
    intake: list[tuple[datetime, float]] = field(default_factory=list)
    queue_depth: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    errors: list[ErrorRow] = field(default_factory=list)
    disk: DiskUse | None = None


def _buckets(now: datetime) -> list[datetime]:
    n = int(WINDOW / BUCKET)
    return [now - WINDOW + BUCKET * (i + 1) for i in range(n)]


def studies_by_state(session: Session) -> list[tuple[str, int]]:
    """Study counts in journey order (every state, zeros included)."""
    counts = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).all())
    return [(str(state), int(counts.get(state, 0))) for state in StudyState]


def queue(session: Session) -> list[QueueRow]:
    """Jobs by kind and state (DONE left out), kinds sorted."""
    rows: dict[str, dict[str, int]] = {}
    query = select(Job.kind, Job.state, func.count()).where(Job.state.in_(_OPEN_STATES)).group_by(Job.kind, Job.state)
    for kind, state, count in session.execute(query):
        rows.setdefault(kind, {})[state] = int(count)
    kinds = sorted({*rows, *session.scalars(select(Job.kind).distinct())})
    return [QueueRow(kind, rows.get(kind, {})) for kind in kinds]


def _bucket_of(session: Session, column: Any, start: datetime) -> Any:
    """SQL for the index of the bucket a timestamp falls in (0 = the first bucket after ``start``)."""
    seconds = BUCKET.total_seconds()
    if session.get_bind().dialect.name == "postgresql":
        return func.floor(func.extract("epoch", column - start) / seconds)
    return cast((func.julianday(column) - func.julianday(start)) * 86400.0 / seconds, Integer)


def intake_rate(session: Session, now: datetime) -> list[tuple[datetime, float]]:
    """Instances received per minute in each bucket of the window (one scan, grouped in the database)."""
    ends = _buckets(now)
    start = now - WINDOW
    bucket = _bucket_of(session, Instance.received_at, start).label("bucket")
    counts = [0] * len(ends)
    query = select(bucket, func.count()).where(Instance.received_at > start).group_by(bucket)
    for index, count in session.execute(query).all():
        if index is not None:
            counts[min(len(ends) - 1, max(0, int(index)))] += int(count)
    minutes = BUCKET.total_seconds() / 60
    return [(end, n / minutes) for end, n in zip(ends, counts, strict=True)]


def queue_depth(session: Session, now: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """Per job kind, the jobs not finished at the end of each bucket (created before, finished after)."""
    ends = _buckets(now)
    columns = [
        func.coalesce(
            func.sum(case((and_(Job.created_at <= end, or_(Job.finished_at.is_(None), Job.finished_at > end)), 1))), 0
        )
        for end in ends
    ]
    query = (
        select(Job.kind, *columns)
        .where(or_(Job.finished_at.is_(None), Job.finished_at > now - WINDOW))
        .group_by(Job.kind)
    )
    return {
        kind: [(end, float(count)) for end, count in zip(ends, counts, strict=True)]
        for kind, *counts in session.execute(query)
    }


def last_errors(session: Session, limit: int = 10) -> list[ErrorRow]:
    """The newest failed or dead jobs and failed studies, with their reasons, newest first."""
    errors = [
        ErrorRow(job.updated_at, f"job {job.id} ({job.kind}, {job.state})", job.last_error or "")
        for job in session.scalars(
            select(Job)
            .where(Job.state.in_((JobState.FAILED, JobState.DEAD)), Job.last_error.is_not(None))
            .order_by(Job.updated_at.desc())
            .limit(limit)
        )
    ]
    errors += [
        ErrorRow(study.updated_at, f"study {study.id} (FAILED)", study.failure_reason or "")
        for study in session.scalars(
            select(Study).where(Study.state == StudyState.FAILED).order_by(Study.updated_at.desc()).limit(limit)
        )
    ]
    return sorted(errors, key=lambda e: e.at, reverse=True)[:limit]


def disk_use(session: Session, storage_dir: Path) -> DiskUse:
    """The storage folder's file system and the bytes of received images whose files are still kept."""
    usage = shutil.disk_usage(storage_dir)
    instances = session.scalar(
        select(func.coalesce(func.sum(Instance.size), 0))
        .join(Series, Series.id == Instance.series_id)
        .where(Series.files_deleted_at.is_(None))
    )
    return DiskUse(Path(storage_dir), usage.total, usage.used, usage.free, int(instances or 0))


def overview(session: Session, storage_dir: Path, now: datetime | None = None) -> Overview:
    """The whole overview page's data."""
    now = now or utcnow()
    rate = intake_rate(session, now)
    hour_ago = now - timedelta(hours=1)
    last_hour = session.scalar(select(func.count()).select_from(Instance).where(Instance.received_at > hour_ago))
    return Overview(
        studies_by_state=studies_by_state(session),
        queue=queue(session),
        received_last_hour=int(last_hour or 0),
        intake=rate,
        queue_depth=queue_depth(session, now),
        errors=last_errors(session),
        disk=disk_use(session, storage_dir),
    )
