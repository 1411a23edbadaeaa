"""Retention: received images go a configured time after their study is finished; nothing else deletes them.

Two rules, applied by the ``retention`` job that the scheduler queues every
``retention.scan_interval_seconds``:

* a study FINISHED (``finished_at`` set when it reached EXPORTED or REJECTED) more than
  ``retention.finished_study_days`` ago loses its received instance files;
* an UNROUTED series whose study last received an instance more than ``retention.unrouted_days`` ago
  loses its files (until then ``laurel status`` lists it).

Rows stay: the study and series get ``files_deleted_at`` so nobody pretends the files still exist.
Studies that are FAILED, waiting for review or anything else unfinished are never touched. Only files
inside ``node.storage_dir`` are ever deleted.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import (
    FINISHED_STATES,
    Instance,
    Series,
    SeriesState,
    Study,
    resolve_path,
    session_scope,
    utcnow,
)
from dicom_node.core.jobs import RETENTION_JOB, Handler, JobContext, fault_point

__all__ = ["RETENTION_JOB", "RetentionReport", "apply_retention", "instance_files_exist", "retention_handler"]
from dicom_node.core.metrics import NodeMetrics

logger = logging.getLogger(__name__)


@dataclass
class RetentionReport:
    """What one retention pass deleted."""

    studies: int = 0
    series: int = 0
    files: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return {"studies": self.studies, "series": self.series, "files": self.files, "bytes": self.bytes}


def _delete_series_files(series: Series, storage_dir: Path, report: RetentionReport, now: datetime) -> None:
    root = storage_dir.resolve()
    folders: set[Path] = set()
    for instance in series.instances:
        path = resolve_path(storage_dir, instance.path)
        try:
            path.resolve().relative_to(root)
        except ValueError:
            logger.error("instance %s is outside the storage folder; not deleted", instance.id)
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        report.files += 1
        report.bytes += size
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        for candidate in (folder, folder.parent):
            if candidate.resolve() != root:
                with contextlib.suppress(OSError):  # not empty: other series live there
                    candidate.rmdir()
    series.files_deleted_at = now
    report.series += 1


def apply_retention(
    engine: Engine,
    config: NodeConfig,
    *,
    now: datetime | None = None,
    metrics: NodeMetrics | None = None,
    ctx: JobContext | None = None,
) -> RetentionReport:
    """Delete the received files that the retention rules allow to go; returns what went."""
    now = now or utcnow()
    rules = config.retention
    storage_dir = config.node.storage_dir
    report = RetentionReport()
    finished_cutoff = now - timedelta(days=rules.finished_study_days)
    unrouted_cutoff = now - timedelta(days=rules.unrouted_days)
    with session_scope(engine) as session:
        study_ids = list(
            session.scalars(
                select(Study.id).where(
                    Study.state.in_([s.value for s in FINISHED_STATES]),
                    Study.finished_at.is_not(None),
                    Study.finished_at <= finished_cutoff,
                    Study.files_deleted_at.is_(None),
                )
            )
        )
        series_ids = list(
            session.scalars(
                select(Series.id)
                .join(Study, Series.study_id == Study.id)
                .where(
                    Series.state == SeriesState.UNROUTED,
                    Series.files_deleted_at.is_(None),
                    Study.last_received_at <= unrouted_cutoff,
                    Study.files_deleted_at.is_(None),
                )
            )
        )
    for study_id in study_ids:
        with session_scope(engine) as session:
            study = session.get(Study, study_id)
            if study is None or study.files_deleted_at is not None:
                continue
            for member in study.series:
                if member.files_deleted_at is None:
                    _delete_series_files(member, storage_dir, report, now)
                    if ctx is not None:  # files gone, rows not yet marked: a re-run finishes the study
                        fault_point("retention.after_delete", ctx)
            study.files_deleted_at = now
            report.studies += 1
            logger.info("retention: deleted the received files of study %s (finished %s)", study_id, study.finished_at)
    for series_id in series_ids:
        with session_scope(engine) as session:
            series = session.get(Series, series_id)
            if series is None or series.files_deleted_at is not None:
                continue
            _delete_series_files(series, storage_dir, report, now)
            logger.info("retention: deleted the files of unrouted series %s", series_id)
    if metrics is not None and report.files:
        metrics.retention_deleted_files.inc(report.files)
    return report


def instance_files_exist(engine: Engine, study_id: int, storage_dir: Path) -> bool:
    """Whether any received file of the study is still on disk (for listings)."""
    with session_scope(engine) as session:
        paths = session.scalars(
            select(Instance.path).join(Series, Instance.series_id == Series.id).where(Series.study_id == study_id)
        )
        return any(resolve_path(storage_dir, p).exists() for p in paths)


def retention_handler(config: NodeConfig, metrics: NodeMetrics | None = None) -> Handler:
    """The handler of ``retention`` jobs."""

    def handle(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        return apply_retention(ctx.engine, config, metrics=metrics, ctx=ctx).as_dict()

    return handle
