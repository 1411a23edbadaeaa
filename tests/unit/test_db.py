"""Study states change in one place, along the journey, with their timestamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.db import InvalidTransition, Study, StudyState, make_engine, session_scope, set_study_state


def test_journey_stamps_completed_and_finished(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'i.db'}")
    with session_scope(engine) as session:
        study = Study(StudyInstanceUID="1.2.3")
        session.add(study)
        session.flush()
        assert study.state == StudyState.RECEIVING
        for state in (StudyState.COMPLETE, StudyState.SEGMENTING, StudyState.PENDING_REVIEW, StudyState.APPROVED):
            set_study_state(session, study, state)
        assert study.completed_at is not None and study.finished_at is None
        set_study_state(session, study, StudyState.EXPORTED)
        assert study.finished_at is not None
    engine.dispose()


def test_forbidden_transitions_need_force(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'i.db'}")
    with session_scope(engine) as session:
        study = Study(StudyInstanceUID="1.2.4")
        session.add(study)
        session.flush()
        with pytest.raises(InvalidTransition, match="RECEIVING; it can move to"):
            set_study_state(session, study, StudyState.APPROVED)
        set_study_state(session, study, StudyState.FAILED, "volume could not be built")
        assert study.failure_reason == "volume could not be built"
        set_study_state(session, study, StudyState.REJECTED, "not a leg study")
        assert study.finished_at is not None
        with pytest.raises(InvalidTransition):
            set_study_state(session, study, StudyState.COMPLETE)
        set_study_state(session, study, StudyState.COMPLETE, force=True)
        assert study.finished_at is None and study.failure_reason is None
    engine.dispose()
