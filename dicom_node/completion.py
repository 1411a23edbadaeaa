"""Study completion: COMPLETE when nothing arrived for ``settle_seconds`` after the study's last association.

DICOM has no "end of study" message; a PACS sends a study over one or more associations. The store counts,
per study, the associations still delivering to it (``associations_open``) and stamps the time the last one
ended (``associations_ended_at``) and the last instance arrived (``last_received_at``). The scheduler calls
:func:`complete_settled_studies` every ``node.completion_scan_seconds``; a study that is RECEIVING, has no
open association, and has been quiet for ``settle_seconds`` since both stamps becomes COMPLETE and, when at
least one of its series is routed to a model, gets one ``segment`` job (dedupe key ``segment:<study_id>``).
Everything is in the database, so after a crash (``kill -9``) and restart the scan completes the study the
same way (the store resets ``associations_open`` at start and restarts the settle time).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, func, or_, select, update

from dicom_node.db import Series, Study, StudyState, session_scope, set_study_state, utcnow
from dicom_node.jobs import enqueue
from dicom_node.metrics import NodeMetrics

logger = logging.getLogger(__name__)

SEGMENT_JOB = "segment"


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
