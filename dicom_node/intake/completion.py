"""Study completion: COMPLETE when nothing arrived for ``settle_seconds`` after the study's last association.

DICOM has no "end of study" message; a PACS sends a study over one or more associations. The store counts,
per study, the associations still delivering to it (``associations_open``) and stamps the time the last one
ended (``associations_ended_at``) and the last instance arrived (``last_received_at``). The scheduler calls
:func:`complete_settled_studies` every ``node.completion_scan_seconds``; a study that is RECEIVING, has no
open association, and has been quiet for ``settle_seconds`` since both stamps becomes COMPLETE and, when at
least one of its series is routed to a model, gets one ``segment`` job (dedupe key ``segment:<study_id>``).
Everything is in the database, so after a crash (``kill -9``) and restart the scan completes the study the
same way (the store resets ``associations_open`` at start and restarts the settle time).

**Late arrivals.** A PACS may send more of a study after it completed (a retried transfer, a series added
later). :func:`queue_late_arrivals` finds, among studies that are COMPLETE, SEGMENTING, PENDING_REVIEW or
FAILED and quiet for ``settle_seconds``, each routed series whose newest instance is newer than its draft
(or that has no draft at all) and queues one ``resegment`` job for it (dedupe key: the series and the time of
its newest instance). What that job does is in :mod:`dicom_node.work.pipeline`. Studies already decided
(APPROVED, EXPORTED, REJECTED) are not touched: their late instances are stored and logged.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, update

from dicom_node.core.db import Job, Series, SeriesState, Study, StudyState, session_scope, set_study_state, utcnow
from dicom_node.core.jobs import enqueue
from dicom_node.core.metrics import NodeMetrics

logger = logging.getLogger(__name__)

SEGMENT_JOB = "segment"
RESEGMENT_JOB = "resegment"
#: Studies whose late instances are segmented again; decided studies keep what was decided.
OPEN_STATES = (StudyState.COMPLETE, StudyState.SEGMENTING, StudyState.PENDING_REVIEW, StudyState.FAILED)


def _settled(cutoff: datetime) -> list[ColumnElement[bool]]:
    return [
        Study.state == StudyState.RECEIVING,
        Study.associations_open == 0,
        Study.last_received_at <= cutoff,
        or_(Study.associations_ended_at.is_(None), Study.associations_ended_at <= cutoff),
    ]


def complete_settled_studies(
    engine: Engine,
    settle_seconds: float,
    *,
    now: datetime | None = None,
    metrics: NodeMetrics | None = None,
) -> list[int]:
    """Mark settled studies COMPLETE and queue their ``segment`` jobs; returns their ids."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settle_seconds)
    completed: list[int] = []
    with session_scope(engine) as session:
        candidates = list(session.scalars(select(Study.id).where(*_settled(cutoff)).order_by(Study.id)))
    for study_id in candidates:
        with session_scope(engine) as session:
            # Re-check under the write lock: an association may have started delivering since the read.
            claimed = session.connection().execute(
                update(Study).where(Study.id == study_id, *_settled(cutoff)).values(updated_at=now)
            )
            if claimed.rowcount != 1:
                continue
            study = session.get(Study, study_id)
            if study is None:  # pragma: no cover - deleted between the two statements
                continue
            set_study_state(session, study, StudyState.COMPLETE)
            routed = session.scalar(
                select(func.count()).select_from(Series).where(Series.study_id == study_id, Series.model.is_not(None))
            )
            if routed:
                enqueue(session, SEGMENT_JOB, {"study_id": study_id}, dedupe_key=f"{SEGMENT_JOB}:{study_id}")
            else:
                logger.info("study %s is complete but no series is routed to a model; kept for retention", study_id)
        completed.append(study_id)
    if completed and metrics is not None:
        metrics.studies_completed.inc(len(completed))
    return completed


def queue_late_arrivals(engine: Engine, settle_seconds: float, *, now: datetime | None = None) -> list[int]:
    """Queue a ``resegment`` job for each routed series that changed after its draft; returns their ids."""
    from dicom_node.core.review_tables import SeriesResult

    now = now or utcnow()
    cutoff = now - timedelta(seconds=settle_seconds)
    queued: list[int] = []
    with session_scope(engine) as session:
        rows = session.execute(
            select(Series.id, Series.last_instance_at)
            .join(Study, Study.id == Series.study_id)
            .outerjoin(SeriesResult, SeriesResult.series_id == Series.id)
            .where(
                Study.state.in_([s.value for s in OPEN_STATES]),
                Study.associations_open == 0,
                Study.last_received_at <= cutoff,
                Series.model.is_not(None),
                Series.files_deleted_at.is_(None),
                Series.changed_since_draft.is_(False),
                Series.last_instance_at.is_not(None),
                Series.state.not_in([SeriesState.SEGMENTING]),
                or_(
                    # a routed series without a draft in a study past segmentation (a SEGMENTING study's series
                    # are its segment job's: a series that job missed is caught once the study leaves SEGMENTING)
                    and_(
                        SeriesResult.id.is_(None),
                        Series.state == SeriesState.ROUTED,
                        Study.state.not_in([StudyState.COMPLETE, StudyState.SEGMENTING]),
                    ),
                    SeriesResult.drafted_at < Series.last_instance_at,
                ),
            )
        ).all()
        for series_id, last in rows:
            key = f"{RESEGMENT_JOB}:{series_id}:{last.isoformat() if last else ''}"
            if session.scalar(select(Job.id).where(Job.dedupe_key == key)) is not None:
                continue  # queued by an earlier scan (maybe done, maybe waiting)
            enqueue(session, RESEGMENT_JOB, {"series_id": series_id}, dedupe_key=key)
            queued.append(series_id)
    if queued:
        logger.info("series with instances newer than their draft: %s", ", ".join(str(i) for i in queued))
    return queued
