"""The federation registry's tables (SQLAlchemy 2): models, versions, sites, updates, usage statistics, audit.

SQLite (WAL, busy timeout) by default; any SQLAlchemy URL (e.g. PostgreSQL) works. The server never
shares these tables with the node: it has its own declarative ``Base``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the federation registry."""


class ModelRow(Base):
    """A shared model (``leg``, ``thigh``): its history is the chain of :class:`VersionRow`."""

    __tablename__ = "fed_models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    region: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VersionRow(Base):
    """A published version: a signed package in the content-addressed store, its parent and its Dice."""

    __tablename__ = "fed_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("fed_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    dice: Mapped[float] = mapped_column(Float)
    dice_detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weight_specs: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [[shape..], dtype] per array
    merged_updates: Mapped[list[Any]] = mapped_column(JSON, default=list)  # update ids
    strategy: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None = bootstrap
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SiteRow(Base):
    """A hospital allowed to upload: its key is stored only as an argon2 hash, looked up by prefix."""

    __tablename__ = "fed_sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(Text)
    models: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # None = every model
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UpdateRow(Base):
    """An uploaded update and its way through the queue: QUEUED → VALIDATING → ACCEPTED | REJECTED."""

    __tablename__ = "fed_updates"
    __table_args__ = (UniqueConstraint("site_id", "idempotency_key", name="uq_site_idempotency"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # queue order
    uid: Mapped[str] = mapped_column(String(32), unique=True)  # public id
    model_id: Mapped[int] = mapped_column(ForeignKey("fed_models.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("fed_sites.id"), index=True)
    base_version: Mapped[int] = mapped_column(Integer)
    n_slices: Mapped[int] = mapped_column(Integer)
    local_dice: Mapped[float | None] = mapped_column(Float, nullable=True)
    client_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    candidate_dice: Mapped[float | None] = mapped_column(Float, nullable=True)
    merged_dice: Mapped[float | None] = mapped_column(Float, nullable=True)
    current_dice: Mapped[float | None] = mapped_column(Float, nullable=True)
    staleness: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # published version when ACCEPTED
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UsageRow(Base):
    """One usage statistic a site reported (Dafne: the Dice of the operator's correction vs the draft)."""

    __tablename__ = "fed_usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("fed_sites.id"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("fed_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    dice: Mapped[float] = mapped_column(Float)
    n_slices: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(Base):
    """An administrative action on the server (site added, key rotated, site revoked, version published,
    update rejected), written in the transaction of the action itself."""

    __tablename__ = "fed_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys, and its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    """Create the tables that do not exist yet."""
    Base.metadata.create_all(engine)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
