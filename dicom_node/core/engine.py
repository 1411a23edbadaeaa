"""Engines over the index and its schema: SQLite pragmas, Alembic migrations, one-line start-up errors."""

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
HEAD_REVISION = "0003_job_leases"
_BASELINE_REVISION = "0001"


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The schema revision of the index (``None``: empty; ``0001``: a 0.1 index without Alembic)."""
    from sqlalchemy import inspect

    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if "alembic_version" in tables:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        return _BASELINE_REVISION if "study" in tables else None


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to :data:`HEAD_REVISION` with Alembic (a no-op when it is there)."""
    from alembic import command

    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    with engine.begin() as conn:
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


def make_engine(url: str, *, create: bool = True, busy_seconds: float = 30.0) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=FULL``, a busy timeout and foreign keys.

    With ``create`` the folder of a SQLite file is created and the schema migrated to the head revision.
    ``busy_seconds``: how long a SQLite statement waits for another process's write lock before it fails.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
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
