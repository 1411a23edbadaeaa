"""The federation registry: models, their version chains, queued updates and usage statistics.

Packages (signed envelopes) and uploaded weight files live in content-addressed stores (file name =
sha256 of the bytes); the database rows point at them. Every function returns plain frozen dataclasses,
never ORM objects, so callers can use them from any thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from federation.server import audit
from federation.server.tables import (
    ModelRow,
    SiteRow,
    UpdateRow,
    UsageRow,
    VersionRow,
    create_schema,
    session_scope,
    utcnow,
)

log = logging.getLogger(__name__)

QUEUED, VALIDATING, ACCEPTED, REJECTED, FAILED = "QUEUED", "VALIDATING", "ACCEPTED", "REJECTED", "FAILED"
TERMINAL_STATES = frozenset({ACCEPTED, REJECTED, FAILED})


class NotFound(LookupError):
    """The model, version or update does not exist."""


class Conflict(RuntimeError):
    """The change contradicts what is already recorded (e.g. a version number taken)."""


class ContentStore:
    """Files named by the sha256 of their bytes; written atomically (fsync, rename), verified on read."""

    def __init__(self, root: Path, suffix: str) -> None:
        self.root = Path(root)
        self.suffix = suffix
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the object with this digest lives."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / f"{sha256}{self.suffix}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest

    def get(self, sha256: str) -> bytes:
        """The stored bytes; ``NotFound`` when absent, ``Conflict`` when they no longer match their name."""
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"object {sha256[:12]}… is missing from {self.root}") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Conflict(f"object {sha256[:12]}… in {self.root} is corrupt (digest mismatch)")
        return data


@dataclass(frozen=True)
class VersionInfo:
    """A published version of a model."""

    model: str
    version: int
    parent_version: int | None
    sha256: str
    size: int
    dice: float
    dice_detail: dict[str, Any]
    weight_specs: list[Any]
    merged_updates: list[str]
    strategy: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class UpdateInfo:
    """An uploaded update and where it stands."""

    uid: str
    seq: int
    model: str
    site: str
    site_id: int
    base_version: int
    n_slices: int
    local_dice: float | None
    client_version: str | None
    weights_sha256: str
    state: str
    reason: str | None = None
    candidate_dice: float | None = None
    merged_dice: float | None = None
    current_dice: float | None = None
    staleness: int | None = None
    version: int | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


@dataclass(frozen=True)
class UsageInfo:
    """A usage statistic reported by a site."""

    site: str
    model: str
    version: int
    dice: float
    n_slices: int | None
    client_version: str | None
    created_at: dt.datetime


@dataclass
class UpdateOutcome:
    """Fields the worker sets when an update reaches a terminal state."""

    state: str
    reason: str | None = None
    candidate_dice: float | None = None
    merged_dice: float | None = None
    current_dice: float | None = None
    staleness: int | None = None
    version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite returns naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _version_info(name: str, row: VersionRow) -> VersionInfo:
    return VersionInfo(
        model=name,
        version=row.version,
        parent_version=row.parent_version,
        sha256=row.sha256,
        size=row.size,
        dice=row.dice,
        dice_detail=dict(row.dice_detail or {}),
        weight_specs=list(row.weight_specs or []),
        merged_updates=[str(u) for u in (row.merged_updates or [])],
        strategy=row.strategy,
        created_at=_aware(row.created_at) or utcnow(),
    )


def _update_info(row: UpdateRow, model: str, site: str) -> UpdateInfo:
    return UpdateInfo(
        uid=row.uid,
        seq=row.seq,
        model=model,
        site=site,
        site_id=row.site_id,
        base_version=row.base_version,
        n_slices=row.n_slices,
        local_dice=row.local_dice,
        client_version=row.client_version,
        weights_sha256=row.weights_sha256,
        state=row.state,
        reason=row.reason,
        candidate_dice=row.candidate_dice,
        merged_dice=row.merged_dice,
        current_dice=row.current_dice,
        staleness=row.staleness,
        version=row.version,
        created_at=_aware(row.created_at),
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
    )


class Registry:
    """Models, versions, updates and usage statistics over one database and two content stores."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        create_schema(engine)
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self.packages = ContentStore(Path(data_dir) / "packages", ".laurel")
        self.uploads = ContentStore(Path(data_dir) / "uploads", ".npz")

    # -- models and versions -------------------------------------------------------------------------
    def ensure_model(self, name: str, region: str) -> None:
        """Register a model name (idempotent)."""
        with session_scope(self.sessions) as s:
            if s.scalar(select(ModelRow).where(ModelRow.name == name)) is None:
                s.add(ModelRow(name=name, region=region))

    def model_names(self) -> list[str]:
        """Every registered model, by name."""
        with session_scope(self.sessions) as s:
            return list(s.scalars(select(ModelRow.name).order_by(ModelRow.name)))

    def model_region(self, name: str) -> str:
        """The body region of a registered model."""
        with session_scope(self.sessions) as s:
            return self._model(s, name).region

    @staticmethod
    def _model(s: Session, name: str) -> ModelRow:
        row = s.scalar(select(ModelRow).where(ModelRow.name == name))
        if row is None:
            raise NotFound(f"no model named {name!r}")
        return row

    def latest(self, model: str) -> VersionInfo | None:
        """The newest published version, or None before the first."""
        with session_scope(self.sessions) as s:
            m = self._model(s, model)
            row = s.scalar(
                select(VersionRow).where(VersionRow.model_id == m.id).order_by(VersionRow.version.desc()).limit(1)
            )
            return None if row is None else _version_info(model, row)

    def version(self, model: str, version: int) -> VersionInfo:
        """One published version; ``NotFound`` when absent."""
        with session_scope(self.sessions) as s:
            m = self._model(s, model)
            row = s.scalar(select(VersionRow).where(VersionRow.model_id == m.id, VersionRow.version == version))
            if row is None:
                raise NotFound(f"model {model!r} has no version {version}")
            return _version_info(model, row)

    def versions(self, model: str) -> list[VersionInfo]:
        """Every published version, oldest first."""
        with session_scope(self.sessions) as s:
            m = self._model(s, model)
            rows = s.scalars(select(VersionRow).where(VersionRow.model_id == m.id).order_by(VersionRow.version))
            return [_version_info(model, r) for r in rows]

    def publish(
        self,
        model: str,
        *,
        version: int,
        parent_version: int | None,
        envelope: bytes,
        dice: float,
        dice_detail: dict[str, Any],
        weight_specs: list[Any],
        merged_updates: Sequence[str] = (),
        strategy: str | None = None,
        accepted: UpdateOutcome | None = None,
    ) -> VersionInfo:
        """Store a signed package and record it as ``version``; ``Conflict`` if the chain moved on.

        With ``accepted`` (the outcome of the one update in ``merged_updates``), the update is marked
        ACCEPTED with this version **in the same transaction**: a version and its update's acceptance are
        recorded together or not at all, so no restart can merge an update twice.
        """
        digest = self.packages.put(envelope)  # the file exists before the row that names it
        try:
            with session_scope(self.sessions) as s:
                m = self._model(s, model)
                newest = s.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == m.id))
                if newest is not None and (version <= newest or parent_version != newest):
                    raise Conflict(f"{model} is at version {newest}; cannot publish {version} on {parent_version}")
                row = VersionRow(
                    model_id=m.id,
                    version=version,
                    parent_version=parent_version,
                    sha256=digest,
                    size=len(envelope),
                    dice=float(dice),
                    dice_detail=dice_detail,
                    weight_specs=weight_specs,
                    merged_updates=list(merged_updates),
                    strategy=strategy,
                )
                s.add(row)
                s.flush()
                info = _version_info(model, row)
                audit.record(
                    s,
                    audit.VERSION_PUBLISH,
                    f"{model} v{version}",
                    actor=audit.SERVER,
                    detail={"sha256": digest, "dice": float(dice), "merged_updates": list(merged_updates)},
                )
                if accepted is not None:
                    if len(merged_updates) != 1:
                        raise ValueError("an accepted outcome names exactly one merged update")
                    accepted.version = version
                    self._finish(s, merged_updates[0], accepted)
        except IntegrityError as exc:
            raise Conflict(f"{model} version {version} exists already") from exc
        log.info("published %s version %d (sha256 %s…, Dice %.4f)", model, version, digest[:12], dice)
        return info

    def package_bytes(self, model: str, version: int) -> bytes:
        """The signed package of a version, verified against its recorded digest."""
        return self.packages.get(self.version(model, version).sha256)

    # -- updates -------------------------------------------------------------------------------------
    def add_update(
        self,
        *,
        model: str,
        site_id: int,
        base_version: int,
        n_slices: int,
        local_dice: float | None,
        client_version: str | None,
        weights: bytes,
        idempotency_key: str | None = None,
    ) -> UpdateInfo:
        """Store the uploaded weights durably and queue the update (QUEUED).

        With an ``idempotency_key`` already used by this site for the same weights, the existing update is
        returned (a retry after a lost answer); for different weights, ``Conflict``.
        """
        digest = hashlib.sha256(weights).hexdigest()
        if idempotency_key is not None:
            existing = self.find_idempotent(site_id, idempotency_key)
            if existing is not None:  # a replay stores nothing, accepted or refused
                return self._same_upload(existing, digest, model, base_version)
        self.uploads.put(weights)  # the file exists before the row that names it
        try:
            return self._insert_update(
                model, site_id, base_version, n_slices, local_dice, client_version, digest, idempotency_key
            )
        except IntegrityError:
            existing = None if idempotency_key is None else self.find_idempotent(site_id, idempotency_key)
            if existing is None:
                self._drop_unreferenced_upload(digest)
                raise
            if existing.weights_sha256 != digest:
                self._drop_unreferenced_upload(digest)
            return self._same_upload(existing, digest, model, base_version)

    def _drop_unreferenced_upload(self, digest: str) -> None:
        """Remove an uploaded weights file that no update row names (a refused concurrent replay)."""
        with session_scope(self.sessions) as s:
            if s.scalar(select(func.count()).select_from(UpdateRow).where(UpdateRow.weights_sha256 == digest)):
                return
        self.uploads.path(digest).unlink(missing_ok=True)

    @staticmethod
    def _same_upload(existing: UpdateInfo, digest: str, model: str, base_version: int) -> UpdateInfo:
        if (existing.weights_sha256, existing.model, existing.base_version) != (digest, model, base_version):
            raise Conflict("this Idempotency-Key was already used for a different upload")
        return existing

    def find_idempotent(self, site_id: int, key: str) -> UpdateInfo | None:
        """The site's update sent with this Idempotency-Key, if any."""
        with session_scope(self.sessions) as s:
            found = self._update_rows(s, UpdateRow.site_id == site_id, UpdateRow.idempotency_key == key)
            return found[0] if found else None

    def _insert_update(
        self,
        model: str,
        site_id: int,
        base_version: int,
        n_slices: int,
        local_dice: float | None,
        client_version: str | None,
        digest: str,
        idempotency_key: str | None,
    ) -> UpdateInfo:
        with session_scope(self.sessions) as s:
            m = self._model(s, model)
            site = s.get(SiteRow, site_id)
            if site is None:
                raise NotFound("unknown site")
            row = UpdateRow(
                uid=uuid.uuid4().hex,
                model_id=m.id,
                site_id=site_id,
                base_version=base_version,
                n_slices=n_slices,
                local_dice=local_dice,
                client_version=client_version,
                weights_sha256=digest,
                idempotency_key=idempotency_key,
                state=QUEUED,
            )
            s.add(row)
            s.flush()
            return _update_info(row, model, site.name)

    def _update_rows(self, s: Session, *where: Any, limit: int | None = None, desc: bool = False) -> list[UpdateInfo]:
        order = UpdateRow.seq.desc() if desc else UpdateRow.seq
        stmt = (
            select(UpdateRow, ModelRow.name, SiteRow.name)
            .join(ModelRow, ModelRow.id == UpdateRow.model_id)
            .join(SiteRow, SiteRow.id == UpdateRow.site_id)
            .where(*where)
            .order_by(order)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_update_info(row, model, site) for row, model, site in s.execute(stmt)]

    def get_update(self, uid: str) -> UpdateInfo:
        """One update by its public id; ``NotFound`` when absent."""
        with session_scope(self.sessions) as s:
            found = self._update_rows(s, UpdateRow.uid == uid)
            if not found:
                raise NotFound(f"no update {uid!r}")
            return found[0]

    def list_updates(
        self, *, model: str | None = None, site_id: int | None = None, limit: int = 200
    ) -> list[UpdateInfo]:
        """Recent updates, newest first, optionally of one model and/or one site."""
        where: list[Any] = []
        if model is not None:
            where.append(ModelRow.name == model)
        if site_id is not None:
            where.append(UpdateRow.site_id == site_id)
        with session_scope(self.sessions) as s:
            return self._update_rows(s, *where, limit=limit, desc=True)

    def claim_next(self) -> UpdateInfo | None:
        """Mark the oldest QUEUED update VALIDATING and return it (None when the queue is empty)."""
        with session_scope(self.sessions) as s:
            seq = s.scalar(select(func.min(UpdateRow.seq)).where(UpdateRow.state == QUEUED))
            if seq is None:
                return None
            claimed = s.execute(
                update(UpdateRow)
                .where(UpdateRow.seq == seq, UpdateRow.state == QUEUED)
                .values(state=VALIDATING, started_at=utcnow())
            )
            if getattr(claimed, "rowcount", 1) != 1:
                return None
            return self._update_rows(s, UpdateRow.seq == seq)[0]

    def finish_update(self, uid: str, outcome: UpdateOutcome) -> UpdateInfo:
        """Record a terminal state with its reason and Dice values."""
        with session_scope(self.sessions) as s:
            self._finish(s, uid, outcome)
            return self._update_rows(s, UpdateRow.uid == uid)[0]

    @staticmethod
    def _finish(s: Session, uid: str, outcome: UpdateOutcome) -> None:
        if outcome.state not in TERMINAL_STATES:
            raise ValueError(f"{outcome.state} is not a terminal state")
        s.execute(
            update(UpdateRow)
            .where(UpdateRow.uid == uid)
            .values(
                state=outcome.state,
                reason=outcome.reason,
                candidate_dice=outcome.candidate_dice,
                merged_dice=outcome.merged_dice,
                current_dice=outcome.current_dice,
                staleness=outcome.staleness,
                version=outcome.version,
                finished_at=utcnow(),
            )
        )
        if outcome.state in (REJECTED, FAILED):
            action = audit.UPDATE_REJECT if outcome.state == REJECTED else audit.UPDATE_FAIL
            audit.record(s, action, f"update {uid}", actor=audit.SERVER, detail={"reason": outcome.reason})

    def version_merging(self, model: str, uid: str) -> VersionInfo | None:
        """The published version that merged update ``uid``, if one did (a restart must not merge it again)."""
        for info in reversed(self.versions(model)):
            if uid in info.merged_updates:
                return info
        return None

    def requeue_interrupted(self) -> int:
        """After a restart: updates left VALIDATING by a stopped worker go back to QUEUED."""
        with session_scope(self.sessions) as s:
            res = s.execute(
                update(UpdateRow).where(UpdateRow.state == VALIDATING).values(state=QUEUED, started_at=None)
            )
            return int(getattr(res, "rowcount", 0) or 0)

    def count_updates(self) -> dict[str, int]:
        """How many updates are in each state."""
        with session_scope(self.sessions) as s:
            rows = s.execute(select(UpdateRow.state, func.count()).group_by(UpdateRow.state))
            return {state: int(n) for state, n in rows}

    def upload_bytes(self, update: UpdateInfo) -> bytes:
        """The weights file of an update, verified against its digest."""
        return self.uploads.get(update.weights_sha256)

    # -- usage statistics ----------------------------------------------------------------------------
    def add_usage(
        self,
        *,
        site_id: int,
        model: str,
        version: int,
        dice: float,
        n_slices: int | None,
        client_version: str | None,
    ) -> None:
        """Record one usage statistic."""
        with session_scope(self.sessions) as s:
            m = self._model(s, model)
            s.add(
                UsageRow(
                    site_id=site_id,
                    model_id=m.id,
                    version=version,
                    dice=float(dice),
                    n_slices=n_slices,
                    client_version=client_version,
                )
            )

    def list_usage(self, *, model: str | None = None, limit: int = 1000) -> list[UsageInfo]:
        """Recent usage statistics, oldest first within the newest ``limit``."""
        stmt = (
            select(UsageRow, ModelRow.name, SiteRow.name)
            .join(ModelRow, ModelRow.id == UsageRow.model_id)
            .join(SiteRow, SiteRow.id == UsageRow.site_id)
            .order_by(UsageRow.id.desc())
            .limit(limit)
        )
        if model is not None:
            stmt = stmt.where(ModelRow.name == model)
        with session_scope(self.sessions) as s:
            out = [
                UsageInfo(
                    site=site,
                    model=name,
                    version=row.version,
                    dice=row.dice,
                    n_slices=row.n_slices,
                    client_version=row.client_version,
                    created_at=_aware(row.created_at) or utcnow(),
                )
                for row, name, site in s.execute(stmt)
            ]
        out.reverse()
        return out
