"""The node's model registry: revisions on disk, the active one, pinning and rollback.

Every model the node can apply is a *revision*: the shipped zoo package (source ``zoo``), a version
pulled from the federation (``federation``, signed by the server), or a package the node learned itself
from an approved correction (``local``). Revisions are numbered per model 1, 2, 3… in the order the node
got them; ``package_version`` is the model's own version number and ``federation_version`` the shared
version the revision descends from (what an upload names as its base).

Packages are code, so a revision file is loaded only when it is trusted: zoo packages by their shipped
sha256, federation packages by the server's signature, local packages by the node's own Ed25519 key
(``storage_dir/node_signing_key.pem``, created on first use, mode 0600), all checked before dill runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from dicom_node.db import Base, session_scope, utcnow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from sqlalchemy import Engine

    from models.package import ModelPackage

logger = logging.getLogger(__name__)


class ModelRevision(Base):
    """One package file the node may apply."""

    __tablename__ = "model_revision"
    __table_args__ = (UniqueConstraint("name", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    package_version: Mapped[int] = mapped_column(Integer)
    federation_version: Mapped[int] = mapped_column(Integer)
    parent_revision: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "revision": self.revision,
            "package_version": self.package_version,
            "federation_version": self.federation_version,
            "parent_revision": self.parent_revision,
            "source": self.source,
            "sha256": self.sha256,
            "note": self.note,
            "created_at": self.created_at.isoformat() + "Z",
        }


class ModelState(Base):
    """Which revision of a model is active, and whether a person pinned it."""

    __tablename__ = "model_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    active_revision: Mapped[int] = mapped_column(Integer)
    pinned: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class RegistryError(ValueError):
    """A registry request that cannot be honoured; the message says why."""


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's own signing key (PEM, mode 0600), created on first use."""
    from models.signing import generate_keypair, private_key_from_pem, private_key_to_pem

    if path.exists():
        return private_key_from_pem(path.read_bytes())
    private, _public = generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_to_pem(private))
    return private


class ModelRegistry:
    """Revisions of every model on this node, with a cache of loaded packages."""

    def __init__(
        self,
        engine: Engine,
        models_dir: Path,
        node_key_path: Path,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self.engine = engine
        self.models_dir = models_dir
        self._node_key = load_or_create_node_key(node_key_path)
        self.trusted_keys = [self._node_key.public_key(), *trusted_keys]
        self._cache: dict[tuple[str, int], ModelPackage] = {}
        self._lock = threading.RLock()

    # -- queries -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Models with at least one revision."""
        with session_scope(self.engine) as s:
            return list(s.scalars(select(ModelState.name).order_by(ModelState.name)))

    def state(self, name: str) -> dict[str, Any]:
        """Active and pinned revision and every revision of ``name``."""
        self.ensure(name)
        with session_scope(self.engine) as s:
            st = s.get(ModelState, name)
            assert st is not None
            revs = s.scalars(
                select(ModelRevision).where(ModelRevision.name == name).order_by(ModelRevision.revision)
            ).all()
            active = next(r for r in revs if r.revision == st.active_revision)
            return {
                "name": name,
                "active_revision": st.active_revision,
                "active_version": active.package_version,
                "federation_version": active.federation_version,
                "pinned": st.pinned,
                "revisions": [r.as_dict() for r in revs],
            }

    def active(self, name: str) -> tuple[ModelRevision, ModelPackage]:
        """The active revision of ``name`` and its package (seeded from the zoo on first use)."""
        self.ensure(name)
        with session_scope(self.engine) as s:
            st = s.get(ModelState, name)
            assert st is not None
            rev = self._revision(s, name, st.active_revision)
        return rev, self.package(rev)

    def revision(self, name: str, revision: int) -> ModelRevision:
        """One revision row; :class:`RegistryError` if it does not exist."""
        with session_scope(self.engine) as s:
            return self._revision(s, name, revision)

    def package(self, rev: ModelRevision) -> ModelPackage:
        """The loaded package of a revision, its trust checked before dill sees a byte."""
        from models.package import load

        key = (rev.name, rev.revision)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = load(Path(rev.path).read_bytes(), self.trusted_keys)
            return self._cache[key]

    # -- changes -----------------------------------------------------------------------------------
    def ensure(self, name: str) -> None:
        """Seed ``name`` from the shipped zoo if the node has no revision of it yet."""
        with self._lock, session_scope(self.engine) as s:
            if s.get(ModelState, name) is not None:
                return
            from models.package import dumps
            from models.zoo import load_default

            try:
                pkg = load_default(name)
            except (KeyError, ValueError, FileNotFoundError) as exc:
                raise RegistryError(f"no model named {name!r} in the zoo") from exc
            self._add(s, name, pkg, dumps(pkg), source="zoo", parent=None, note="shipped default")

    def add(
        self,
        pkg: ModelPackage,
        *,
        source: str,
        parent_revision: int | None,
        note: str | None = None,
        payload: bytes | None = None,
    ) -> ModelRevision:
        """Store a new revision; it becomes active unless the model is pinned.

        ``payload`` is the signed package as received (federation); local packages are signed here
        with the node's key.
        """
        from models.package import dumps
        from models.signing import sign

        data = payload if payload is not None else sign(dumps(pkg), self._node_key)
        with self._lock, session_scope(self.engine) as s:
            return self._add(s, pkg.name, pkg, data, source=source, parent=parent_revision, note=note)

    def _add(
        self,
        s: Session,
        name: str,
        pkg: ModelPackage,
        data: bytes,
        *,
        source: str,
        parent: int | None,
        note: str | None,
    ) -> ModelRevision:
        from models.signing import sha256_hex

        last = s.scalar(select(func.max(ModelRevision.revision)).where(ModelRevision.name == name)) or 0
        number = last + 1
        path = self.models_dir / name / f"r{number:04d}-v{pkg.version}-{source}.laurel"
        _atomic_write(path, data)
        fed_version = pkg.version
        if source == "local" and parent is not None:
            fed_version = self._revision(s, name, parent).federation_version
        rev = ModelRevision(
            name=name,
            revision=number,
            package_version=pkg.version,
            federation_version=fed_version,
            parent_revision=parent,
            source=source,
            path=str(path),
            sha256=sha256_hex(data),
            note=note,
        )
        s.add(rev)
        st = s.get(ModelState, name)
        if st is None:
            s.add(ModelState(name=name, active_revision=number, pinned=False))
        elif not st.pinned:
            st.active_revision = number
        s.flush()
        with self._lock:
            self._cache[(name, number)] = pkg
        logger.info(
            "model %s: revision %d (v%d, %s)%s",
            name,
            number,
            pkg.version,
            source,
            "" if st is None or not st.pinned else " stored; the model is pinned",
        )
        return rev

    def pin(self, name: str, revision: int | None = None) -> dict[str, Any]:
        """Pin the active (or the given) revision: nothing learned or pulled replaces it until unpinned."""
        self.ensure(name)
        with self._lock, session_scope(self.engine) as s:
            st = s.get(ModelState, name)
            assert st is not None
            if revision is not None:
                self._revision(s, name, revision)
                st.active_revision = revision
            st.pinned = True
        return self.state(name)

    def unpin(self, name: str) -> dict[str, Any]:
        """Let new revisions become active again (the newest one is activated)."""
        self.ensure(name)
        with self._lock, session_scope(self.engine) as s:
            st = s.get(ModelState, name)
            assert st is not None
            st.pinned = False
            newest = s.scalar(select(func.max(ModelRevision.revision)).where(ModelRevision.name == name))
            st.active_revision = int(newest or st.active_revision)
        return self.state(name)

    def rollback(self, name: str, revision: int) -> dict[str, Any]:
        """Make an older revision active and pin it, so the next learning step does not undo the rollback."""
        return self.pin(name, revision)

    @staticmethod
    def _revision(s: Session, name: str, revision: int) -> ModelRevision:
        rev = s.scalar(select(ModelRevision).where(ModelRevision.name == name, ModelRevision.revision == revision))
        if rev is None:
            raise RegistryError(f"model {name!r} has no revision {revision}")
        return rev
