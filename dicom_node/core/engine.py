"""Engines over the index and its schema: SQLite pragmas or a PostgreSQL pool, Alembic migrations, one-line
start-up errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from dicom_node.core.db import Base
from dicom_node.core.errors import SchemaError, StartupError
from dicom_node.core.startup import explain

logger = logging.getLogger(__name__)


def _sqlite_pragmas(busy_seconds: float) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    return apply


def import_table_modules() -> None:
    """Import every module that adds tables to :class:`Base` (the metadata is complete afterwards)."""
    import dicom_node.core.model_tables
    import dicom_node.core.review_tables  # noqa: F401


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The revision this code needs; a database at another revision is upgraded by :func:`migrate`.
#: Revision ``0001`` is the schema of Laurel 0.1, which had no ``alembic_version`` table.
HEAD_REVISION = "0005_token_roles"
_BASELINE_REVISION = "0001"


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


#: Key of the PostgreSQL advisory lock held while one process creates or upgrades the schema.
_MIGRATION_LOCK = 0x4C415552454C  # "LAUREL"


def current_revision(engine: Engine) -> str | None:
    """The schema revision of the index (``None``: empty; ``0001``: a 0.1 index without Alembic)."""
    with engine.connect() as conn:
        return _revision_of(conn)


def _revision_of(conn: Any) -> str | None:
    from sqlalchemy import inspect

    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        value = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        return None if value is None else str(value)
    return _BASELINE_REVISION if "study" in tables else None


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to :data:`HEAD_REVISION` with Alembic (a no-op when it is there).

    On PostgreSQL the work runs under an advisory lock, so processes that start together (intake, workers)
    migrate once; its DDL is transactional, so a failed upgrade leaves the previous schema.
    """
    from alembic import command

    if current_revision(engine) == HEAD_REVISION:
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        revision = _revision_of(conn)  # again, under the lock: another process may have migrated meanwhile
        if revision == HEAD_REVISION:
            return
        cfg = _alembic_config(conn)
        if revision is None:
            # An empty database: create the head schema and record it (what Alembic advises; the test
            # suite checks that the migrations from empty give exactly this schema).
            import_table_modules()
            Base.metadata.create_all(conn)
            command.stamp(cfg, "head")
            return
        if revision == _BASELINE_REVISION and not _has_version_table(conn):
            command.stamp(cfg, _BASELINE_REVISION)  # a 0.1 index: its tables are revision 0001
        try:
            command.upgrade(cfg, "head")
        except Exception as exc:
            if "Can't locate revision" in str(exc):
                raise SchemaError(
                    f"the index is at schema revision {revision}, which this version of Laurel does not know "
                    f"(it needs {HEAD_REVISION}); it was written by a newer Laurel: upgrade Laurel"
                ) from exc
            raise
    logger.info("index schema upgraded from %s to %s", revision or "empty", HEAD_REVISION)


def _has_version_table(conn: Any) -> bool:
    from sqlalchemy import inspect

    return "alembic_version" in inspect(conn).get_table_names()


def normalize_url(url: str) -> str:
    """``url`` with the driver Laurel ships for its backend (``postgresql://`` means psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, create: bool = True, busy_seconds: float = 30.0) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=FULL``, a busy timeout and foreign keys;
    PostgreSQL (psycopg 3) a connection pool that checks connections before use (a restarted server costs
    no failed request) and a connect timeout.

    With ``create`` the folder of a SQLite file is created and the schema migrated to the head revision.
    ``busy_seconds``: how long a SQLite statement waits for another process's write lock before it fails
    (on PostgreSQL: the connect timeout and how long to wait for a free pooled connection).
    """
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "postgresql":
        # The intake keeps one connection; job threads, the scheduler and the API share the rest.
        kwargs.update(
            pool_size=8,
            max_overflow=16,
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_timeout=busy_seconds,
            connect_args={"connect_timeout": max(1, int(min(busy_seconds, 30))), "application_name": "laurel"},
        )
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_seconds}
        database = parsed.database
        if create and database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(busy_seconds))
    if create:
        try:
            migrate(engine)
        except Exception as exc:
            engine.dispose()
            message = explain(exc, url)
            if message is not None and not isinstance(exc, SchemaError):
                raise StartupError(message) from exc
            raise
    return engine
