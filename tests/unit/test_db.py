"""Study states change in one place, along the journey, with their timestamps; the schema migrates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_an_index_of_laurel_0_1_is_upgraded_with_its_rows(db_url: str) -> None:
    """0.1 created its tables with ``create_all`` and had no alembic_version table."""
    import sqlalchemy as sa
    from alembic import command

    from dicom_node.core.engine import HEAD_REVISION, _alembic_config, current_revision
    from dicom_node.core.model_tables import ModelRevision

    url = db_url
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


def _schema(url: str) -> dict[str, Any]:
    """Every table's columns (name, type, nullability, default), keys, indexes and constraints, as reflected."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            table: {
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ),
                "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
                ),
                "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
                "foreign_keys": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                    for f in inspector.get_foreign_keys(table)
                ),
            }
            for table in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


def test_a_new_index_and_a_migrated_one_have_the_same_schema(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A new index is made by ``create_all`` + stamp; an old one is upgraded from 0001 by the migrations: the
    two give the same schema, which is the schema of the code (on SQLite and PostgreSQL)."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dicom_node.core.db import Base
    from dicom_node.core.engine import HEAD_REVISION, _alembic_config, current_revision, import_table_modules

    if db_url.startswith("sqlite"):
        migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        migrated_url = request.getfixturevalue("postgres_server").create_database("migrated")
    new = make_engine(db_url)  # empty: create_all + stamp
    assert current_revision(new) == HEAD_REVISION
    new.dispose()

    import_table_modules()
    engine = sa.create_engine(migrated_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert current_revision(engine) == HEAD_REVISION
    engine.dispose()
    assert diff == []
    created, migrated = _schema(db_url), _schema(migrated_url)
    assert "job" in created and ("claimed_by", "VARCHAR(255)", True, "None") in created["job"]["columns"]
    assert created == migrated


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


def test_postgresql_urls_use_psycopg_3() -> None:
    from dicom_node.core.engine import normalize_url

    assert normalize_url("postgresql://laurel:pw@db:5432/laurel") == "postgresql+psycopg://laurel:pw@db:5432/laurel"
    assert normalize_url("postgresql+psycopg://laurel@db/laurel") == "postgresql+psycopg://laurel@db/laurel"
    assert normalize_url("sqlite:////var/lib/laurel/laurel.db") == "sqlite:////var/lib/laurel/laurel.db"


def test_a_postgresql_index_that_cannot_be_reached_is_said_in_one_line(postgres_server: Any) -> None:
    from dicom_node.core.errors import StartupError
    from tests.peers import free_port

    missing = postgres_server.url("no_such_database")
    with pytest.raises(StartupError, match="no_such_database does not exist: create it"):
        make_engine(missing)
    nobody = f"postgresql://laurel@127.0.0.1:{free_port()}/laurel"
    with pytest.raises(StartupError, match=r"does not answer: check node\.database_url") as raised:
        make_engine(nobody, busy_seconds=2)
    assert "laurel@127.0.0.1" in str(raised.value)
