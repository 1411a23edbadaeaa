"""A study is complete when nothing arrived for settle_seconds after its last association ended."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from dicom_node.core.db import Job, Series, SeriesState, Study, StudyState, session_scope, utcnow
from dicom_node.core.engine import make_engine
from dicom_node.intake.completion import complete_settled_studies


@pytest.fixture
def engine(db_url: str) -> Any:
    """An index on each backend (SQLite, PostgreSQL)."""
    e = make_engine(db_url)
    yield e
    e.dispose()


def add_study(
    engine: Engine,
    uid: str,
    *,
    last: datetime,
    open_: int = 0,
    ended: datetime | None = None,
    model: str | None = "leg",
) -> int:
    with session_scope(engine) as session:
        study = Study(StudyInstanceUID=uid, last_received_at=last, associations_open=open_, associations_ended_at=ended)
        session.add(study)
        session.flush()
        session.add(
            Series(
                study_id=study.id,
                SeriesInstanceUID=uid + ".1",
                model=model,
                state=SeriesState.ROUTED if model else SeriesState.UNROUTED,
            )
        )
        return study.id


def state(engine: Engine, study_id: int) -> str:
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study.state


def test_only_settled_studies_complete(engine: Engine) -> None:
    now = utcnow()
    old = now - timedelta(seconds=30)
    settled = add_study(engine, "1.1", last=old, ended=old)
    still_open = add_study(engine, "1.2", last=old, open_=1)
    recent_instance = add_study(engine, "1.3", last=now - timedelta(seconds=2))
    recent_close = add_study(engine, "1.4", last=old, ended=now - timedelta(seconds=2))
    assert complete_settled_studies(engine, 10, now=now) == [settled]
    assert state(engine, settled) == StudyState.COMPLETE
    for waiting in (still_open, recent_instance, recent_close):
        assert state(engine, waiting) == StudyState.RECEIVING
    assert complete_settled_studies(engine, 10, now=now + timedelta(seconds=20)) == [recent_instance, recent_close]


def test_complete_studies_get_one_segment_job(engine: Engine) -> None:
    now = utcnow()
    routed = add_study(engine, "2.1", last=now - timedelta(seconds=60))
    unrouted = add_study(engine, "2.2", last=now - timedelta(seconds=60), model=None)
    assert complete_settled_studies(engine, 10, now=now) == [routed, unrouted]
    assert complete_settled_studies(engine, 10, now=now) == []
    with session_scope(engine) as session:
        jobs = list(session.scalars(select(Job)))
        assert [(j.kind, j.payload, j.dedupe_key) for j in jobs] == [
            ("segment", {"study_id": routed}, f"segment:{routed}")
        ]
        study = session.get(Study, routed)
        assert study is not None and study.completed_at is not None
    assert state(engine, unrouted) == StudyState.COMPLETE


def test_a_segmenting_studys_undrafted_series_is_its_segment_jobs_not_a_late_arrival(engine: Engine) -> None:
    """Between the segment job's study and series updates the series looks undrafted: no ``resegment`` then;
    a routed series still without a draft once the study is past segmentation is one."""
    from dicom_node.intake.completion import queue_late_arrivals

    old = utcnow() - timedelta(seconds=30)
    study_id = add_study(engine, "3.1", last=old, ended=old)
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        assert study is not None
        study.state = StudyState.SEGMENTING
        study.series[0].last_instance_at = old
    assert queue_late_arrivals(engine, 1.0) == []
    with session_scope(engine) as session:
        study = session.get(Study, study_id)
        assert study is not None
        study.state = StudyState.PENDING_REVIEW
        series_id = study.series[0].id
    assert queue_late_arrivals(engine, 1.0) == [series_id]
