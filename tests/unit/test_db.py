"""Study states change in one place, along the journey, with their timestamps; the schema migrates."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.core.db import InvalidTransition, Study, StudyState, session_scope, set_study_state
from dicom_node.core.engine import make_engine


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


def test_an_index_of_laurel_0_1_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    """0.1 created its tables with ``create_all`` and had no alembic_version table."""
    import sqlalchemy as sa
    from alembic import command

    from dicom_node.core.engine import HEAD_REVISION, _alembic_config, current_revision
    from dicom_node.core.model_tables import ModelRevision

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    with old.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")  # exactly the 0.1 schema
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.exec_driver_sql(
            "INSERT INTO model_revision (name, revision, package_version, federation_version, source, path, "
            "sha256, created_at) VALUES ('leg', 1, 1, 1, 'zoo', '/old/models/leg/r0001.laurel', 'ab', "
            "'2026-01-01 00:00:00')"
        )
    old.dispose()
    engine = make_engine(url)
    assert current_revision(engine) == HEAD_REVISION
    with session_scope(engine) as s:
        row = s.scalars(sa.select(ModelRevision)).one()
        assert (row.name, row.source, row.source_key) == ("leg", "zoo", "zoo")
    engine.dispose()


def test_the_migrations_from_empty_give_the_schema_of_the_code(tmp_path: Path) -> None:
    """A new index is made by ``create_all`` + stamp; upgrading an old one runs the migrations: same schema."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dicom_node.core.db import Base
    from dicom_node.core.engine import _alembic_config, import_table_modules

    import_table_modules()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    engine.dispose()


def test_an_index_from_a_newer_laurel_is_refused_with_what_to_do(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from dicom_node.core.errors import SchemaError

    url = f"sqlite:///{tmp_path / 'new.db'}"
    make_engine(url).dispose()
    raw = sa.create_engine(url)
    with raw.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    raw.dispose()
    with pytest.raises(SchemaError, match="newer Laurel"):
        make_engine(url)
