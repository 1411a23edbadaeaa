"""The approved series a node keeps on site for guarded learning: its reference set and its replay buffer.

Each kept case is a few labelled slices of one approved series (an ``.npz`` of image, labels and spacing,
content-addressed under ``<models_dir>/<model>/cases/``) and a :class:`SiteCaseRecord` row naming it. The
file is written (fsync'd, renamed) before the row that names it is committed, and the row is recorded in the
same transaction as the revision learned from that approval, so a crash leaves both or neither. Each role is
bounded: recording a case drops that role's oldest rows beyond the limit; files no row names any more are
removed afterwards (:meth:`SiteCaseStore.prune`).
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dicom_node.core.db import resolve_path, session_scope, utcnow
from dicom_node.core.model_tables import SiteCaseRecord
from dicom_node.work.guard import ROLES, SiteCase
from dicom_node.work.learning import atomic_write

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)


def case_bytes(case: SiteCase) -> bytes:
    """A case as compressed ``.npz`` bytes (``image``, ``labels``, ``spacing``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, image=case.image, labels=case.labels, spacing=np.asarray(case.spacing, np.float64))
    return buf.getvalue()


def case_from_bytes(key: str, data: bytes) -> SiteCase:
    """Inverse of :func:`case_bytes` (never unpickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        sp = [float(v) for v in npz["spacing"]]
        return SiteCase(key, np.asarray(npz["image"]), np.asarray(npz["labels"]), (sp[0], sp[1], sp[2]))


class SiteCaseStore:
    """Kept cases of every model: files under the registry folder, rows in the index."""

    def __init__(self, engine: Engine, models_dir: Path) -> None:
        self.engine = engine
        self.models_dir = Path(models_dir)

    def write(self, model: str, case: SiteCase) -> str:
        """Store a case's file (before any row names it); returns its path relative to the registry folder."""
        data = case_bytes(case)
        relative = f"{model}/cases/{hashlib.sha256(data).hexdigest()}.npz"
        path = self.models_dir / relative
        if not path.exists():
            atomic_write(path, data)
        return relative

    def record(
        self, s: Session, model: str, role: str, case: SiteCase, relative: str, series_id: int | None, limit: int
    ) -> None:
        """Add the case's row in the caller's transaction and drop the role's oldest rows beyond ``limit``."""
        if role not in ROLES:
            raise ValueError(f"unknown site case role {role!r}")
        kept = select(SiteCaseRecord.id).where(SiteCaseRecord.model == model, SiteCaseRecord.source_key == case.key)
        if s.scalar(kept) is not None:
            return  # kept already (a re-run after a crash)
        s.add(
            SiteCaseRecord(
                model=model,
                source_key=case.key,
                series_id=series_id,
                role=role,
                path=relative,
                n_slices=case.n_slices,
                created_at=utcnow(),
            )
        )
        s.flush()
        ids = s.scalars(
            select(SiteCaseRecord.id)
            .where(SiteCaseRecord.model == model, SiteCaseRecord.role == role)
            .order_by(SiteCaseRecord.id.desc())
        ).all()
        stale = list(ids[limit:])
        if stale:
            s.execute(delete(SiteCaseRecord).where(SiteCaseRecord.id.in_(stale)))

    def cases(self, model: str, role: str) -> list[SiteCase]:
        """The kept cases of ``model`` in ``role``, oldest first (a missing or damaged file is skipped)."""
        with session_scope(self.engine) as s:
            rows = [
                (r.source_key, r.path)
                for r in s.scalars(
                    select(SiteCaseRecord)
                    .where(SiteCaseRecord.model == model, SiteCaseRecord.role == role)
                    .order_by(SiteCaseRecord.id)
                )
            ]
        out = []
        for key, relative in rows:
            try:
                out.append(case_from_bytes(key, resolve_path(self.models_dir, relative).read_bytes()))
            except (OSError, ValueError, KeyError) as exc:
                logger.error("model %s: kept case %s cannot be read (%s); left out", model, key, exc)
        return out

    def role_of(self, model: str, key: str) -> str | None:
        """The role ``model`` keeps the approval ``key`` in, if it keeps it."""
        with session_scope(self.engine) as s:
            role = s.scalar(
                select(SiteCaseRecord.role).where(SiteCaseRecord.model == model, SiteCaseRecord.source_key == key)
            )
        return None if role is None else str(role)

    def counts(self, model: str) -> dict[str, int]:
        """Kept cases of ``model`` per role."""
        with session_scope(self.engine) as s:
            rows = s.execute(
                select(SiteCaseRecord.role, func.count())
                .where(SiteCaseRecord.model == model)
                .group_by(SiteCaseRecord.role)
            ).all()
        found = {str(role): int(n) for role, n in rows}
        return {role: found.get(role, 0) for role in ROLES}

    def listing(self, model: str) -> list[dict[str, Any]]:
        """Every kept case of ``model`` (JSON-ready), oldest first."""
        with session_scope(self.engine) as s:
            rows = s.scalars(
                select(SiteCaseRecord).where(SiteCaseRecord.model == model).order_by(SiteCaseRecord.id)
            ).all()
            return [r.as_dict() for r in rows]

    def prune(self, model: str) -> int:
        """Delete the case files of ``model`` that no row names any more; returns how many."""
        folder = self.models_dir / model / "cases"
        if not folder.is_dir():
            return 0
        with session_scope(self.engine) as s:
            named = {Path(p).name for p in s.scalars(select(SiteCaseRecord.path).where(SiteCaseRecord.model == model))}
        removed = 0
        for path in folder.glob("*.npz"):
            if path.name not in named:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
