"""The node's model registry: revisions on disk, the active one, pinning, rollback and the learning lease.

Every model the node can apply is a *revision*: the shipped zoo package (source ``zoo``), a version
pulled from the federation (``federation``, signed by the server), or a package the node learned itself
from an approved correction (``local``). Revisions are numbered per model 1, 2, 3… in the order the node
got them; ``package_version`` is the model's own version number and ``federation_version`` the shared
version the revision descends from (what an upload names as its base).

Restart-safe by construction (every fact is a row; the package cache is only a cache):

* Files are content-addressed (``<models_dir>/<name>/<sha256>.laurel``), written to a temporary name,
  fsync'd and renamed *before* the row that names them is committed; rows record the path relative to the
  registry folder, so a restored backup at another path loads as it is.
* The shipped zoo package is stored **byte for byte**, so its payload hash matches the shipped manifest in
  any fresh process (0.1 stored an unsigned re-serialisation that no fresh process could trust; such rows
  are repaired from the shipped file the first time they are loaded).
* ``source_key`` names the side effect a revision records (``approval:<SOP Instance UID of the approved
  SEG>``, ``federation:<version>``); it is unique per model, so one approval or one federation version
  never becomes two revisions, whatever crashes in between.
* The *learning lease* (:meth:`ModelRegistry.acquire_lease`) lets one job at a time change a model's
  revisions (learn, sync), whichever process or host runs it; it is a row, taken over when its holder's job
  is no longer held by a live runner (not RUNNING, or past its job lease) or the lease expired. A long
  step renews it while it learns (:meth:`ModelRegistry.renew_lease`) and records nothing once it lost it.

Packages are code, so a revision file is loaded only when it is trusted, by its source: zoo packages by
their shipped sha256, federation packages by the server's signature (never by the zoo list), local
packages by the node's own Ed25519 key (``storage_dir/node_signing_key.pem``, created on first use, mode
0600); all checked before dill runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.core.db import Job, JobState, resolve_path, session_scope, utcnow
from dicom_node.core.model_tables import ModelRevision, ModelState

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from sqlalchemy import Engine

    from dicom_node.work.guard import Verdict
    from models.package import ModelPackage

logger = logging.getLogger(__name__)

SOURCES = ("zoo", "federation", "local")
ACCEPTED = "accepted"
REJECTED = "rejected"


class RegistryError(ValueError):
    """A registry request that cannot be honoured; the message says why."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync it, rename it into place, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_node_key(path: Path) -> Ed25519PrivateKey:
    """The node's own signing key (PEM, mode 0600), created on first use (atomically: never half-written)."""
    from models.signing import generate_keypair, private_key_from_pem, private_key_to_pem

    if path.exists():
        return private_key_from_pem(path.read_bytes())
    private, _public = generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_to_pem(private))
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another process created the key meanwhile: use theirs
    except FileExistsError:
        return private_key_from_pem(path.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return private


class ModelRegistry:
    """Revisions of every model on this node (rows), their files, and a cache of loaded packages."""

    def __init__(
        self,
        engine: Engine,
        models_dir: Path,
        node_key_path: Path,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
    ) -> None:
        self.engine = engine
        self.models_dir = Path(models_dir)
        self._node_key = load_or_create_node_key(node_key_path)
        #: Keys a federation package must be signed by (the federation server's).
        self.federation_keys: list[Ed25519PublicKey] = list(trusted_keys)
        self._cache: dict[tuple[str, int, str], ModelPackage] = {}
        self._lock = threading.RLock()

    @property
    def node_public_key(self) -> Ed25519PublicKey:
        """The public half of the node's signing key (local revisions verify with it)."""
        return self._node_key.public_key()

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

    def find(self, name: str, source_key: str) -> ModelRevision | None:
        """The revision that recorded ``source_key`` (e.g. an approval), if there is one."""
        with session_scope(self.engine) as s:
            return s.scalar(
                select(ModelRevision).where(ModelRevision.name == name, ModelRevision.source_key == source_key)
            )

    def newest_shared_version(self, name: str) -> int:
        """The newest federation version this node holds (zoo or pulled); 0 when it has none."""
        with session_scope(self.engine) as s:
            value = s.scalar(
                select(func.max(ModelRevision.federation_version)).where(
                    ModelRevision.name == name, ModelRevision.source.in_(["zoo", "federation"])
                )
            )
        return int(value or 0)

    def file_path(self, rev: ModelRevision) -> Path:
        """Where a revision's package file is (the row records it relative to the registry folder)."""
        return resolve_path(self.models_dir, rev.path)

    def package(self, rev: ModelRevision) -> ModelPackage:
        """The loaded package of a revision: file hash and trust checked before dill sees a byte."""
        key = (rev.name, rev.revision, rev.sha256)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        pkg = self._load(rev)
        with self._lock:
            self._cache[key] = pkg
        return pkg

    def _load(self, rev: ModelRevision) -> ModelPackage:
        from models.package import UntrustedPackage, load
        from models.signing import sha256_hex

        path = self.file_path(rev)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RegistryError(
                f"model {rev.name} revision {rev.revision}: its package file {path} is missing; restore "
                f"{self.models_dir} from the backup it came with, or roll back to another revision"
            ) from None
        if sha256_hex(data) != rev.sha256:
            raise RegistryError(
                f"model {rev.name} revision {rev.revision}: {path.name} does not match the sha256 recorded "
                "for it (changed on disk); roll back to another revision"
            )
        keys, allow_zoo = self._trust(rev.source)
        try:
            return load(data, keys, allow_zoo=allow_zoo)
        except UntrustedPackage:
            if rev.source != "zoo":
                raise
            return self._repair_zoo(rev)

    def _trust(self, source: str) -> tuple[list[Ed25519PublicKey], bool]:
        """Which keys (and whether the shipped zoo list) may vouch for a package of this source."""
        if source == "zoo":
            return [], True
        if source == "local":
            return [self.node_public_key], False
        return list(self.federation_keys), False

    def _repair_zoo(self, rev: ModelRevision) -> ModelPackage:
        """A zoo revision stored by Laurel 0.1 (an unsigned re-serialisation): store the shipped bytes."""
        from models.package import load
        from models.signing import parse

        data = _zoo_bytes(rev.name)
        manifest = parse(data).manifest
        if int(manifest.get("version", -1)) != rev.package_version:
            raise RegistryError(
                f"model {rev.name} revision {rev.revision} is a zoo package of version {rev.package_version}, "
                f"but this Laurel ships version {manifest.get('version')}; roll back to another revision"
            )
        pkg = load(data, (), allow_zoo=True)
        relative, digest = self._write_file(rev.name, data)
        with session_scope(self.engine) as s:
            s.execute(update(ModelRevision).where(ModelRevision.id == rev.id).values(path=relative, sha256=digest))
        logger.warning("model %s revision %d: replaced a 0.1 zoo copy by the shipped package", rev.name, rev.revision)
        with self._lock:
            self._cache[(rev.name, rev.revision, digest)] = pkg
        return pkg

    # -- changes -----------------------------------------------------------------------------------
    def _write_file(self, name: str, data: bytes) -> tuple[str, str]:
        """Store package bytes content-addressed; returns (path relative to the registry, sha256)."""
        from models.signing import sha256_hex

        digest = sha256_hex(data)
        path = self.models_dir / name / f"{digest}.laurel"
        if not (path.exists() and path.stat().st_size == len(data) and sha256_hex(path.read_bytes()) == digest):
            atomic_write(path, data)
        return f"{name}/{digest}.laurel", digest

    def ensure(self, name: str) -> None:
        """Seed ``name`` from the shipped zoo (its bytes, unchanged) if the node has no revision of it yet."""
        with session_scope(self.engine) as s:
            if s.get(ModelState, name) is not None:
                return
        from models.package import load

        try:
            data = _zoo_bytes(name)
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise RegistryError(f"no model named {name!r} in the zoo") from exc
        pkg = load(data, (), allow_zoo=True)
        if pkg.name != name:
            raise RegistryError(f"the shipped package for {name!r} holds model {pkg.name!r}")
        self._record(pkg, data, source="zoo", parent=None, note="shipped default", source_key="zoo")

    def add(
        self,
        pkg: ModelPackage,
        *,
        source: str,
        parent_revision: int | None,
        note: str | None = None,
        payload: bytes | None = None,
        source_key: str | None = None,
        on_record: Callable[[Session, ModelRevision], None] | None = None,
        verdict: Verdict | None = None,
    ) -> ModelRevision:
        """Store a new revision; it becomes active unless the model is pinned or ``verdict`` rejects it.

        ``payload`` is the signed package as received (federation); local packages are signed here
        with the node's key. With ``source_key``, a revision that already recorded it is returned instead
        (nothing is added). ``verdict`` (guarded learning) is recorded with the revision: a rejected
        candidate is kept, with its reason, but never activated. ``on_record(session, revision)`` runs in
        the transaction that records the revision (e.g. to queue its upload), so both happen or neither.
        """
        from models.package import dumps
        from models.signing import sign

        if source not in SOURCES:
            raise RegistryError(f"unknown revision source {source!r}")
        data = payload if payload is not None else sign(dumps(pkg), self._node_key)
        return self._record(
            pkg,
            data,
            source=source,
            parent=parent_revision,
            note=note,
            source_key=source_key,
            on_record=on_record,
            verdict=verdict,
        )

    def _record(
        self,
        pkg: ModelPackage,
        data: bytes,
        *,
        source: str,
        parent: int | None,
        note: str | None,
        source_key: str | None,
        on_record: Callable[[Session, ModelRevision], None] | None = None,
        verdict: Verdict | None = None,
    ) -> ModelRevision:
        name = pkg.name
        if source_key is not None:
            existing = self.find(name, source_key)
            if existing is not None:
                return existing
        relative, digest = self._write_file(name, data)  # the file exists before any row names it
        for _attempt in range(10):
            try:
                with session_scope(self.engine) as s:
                    rev, activated = self._insert(s, pkg, relative, digest, source, parent, note, source_key)
                    if verdict is not None:
                        activated = self._apply_verdict(s, rev, verdict, activated)
                    if on_record is not None:
                        on_record(s, rev)
                break
            except IntegrityError:
                # another writer took the number (or recorded the same source_key) first: look again
                if source_key is not None:
                    existing = self.find(name, source_key)
                    if existing is not None:
                        return existing
        else:  # pragma: no cover - ten collisions in a row
            raise RegistryError(f"could not record a new revision of {name}: the registry is too busy")
        with self._lock:
            self._cache[(name, rev.revision, digest)] = pkg
        why = "" if activated else (" kept as a rejected candidate" if rev.verdict == REJECTED else " stored; pinned")
        logger.info("model %s: revision %d (v%d, %s)%s", name, rev.revision, pkg.version, source, why)
        return rev

    def _apply_verdict(self, s: Session, rev: ModelRevision, verdict: Verdict, activated: bool) -> bool:
        """Record the guard's verdict on ``rev``; a rejected revision leaves the active one as it was."""
        rev.verdict = ACCEPTED if verdict.accepted else REJECTED
        rev.verdict_reason = verdict.reason
        rev.reference_dice = verdict.candidate_dice
        rev.active_reference_dice = verdict.active_dice
        if not verdict.accepted and activated:
            st = s.get(ModelState, rev.name)
            assert st is not None and rev.parent_revision is not None
            st.active_revision = rev.parent_revision
            return False
        return activated

    def _insert(
        self,
        s: Session,
        pkg: ModelPackage,
        relative: str,
        digest: str,
        source: str,
        parent: int | None,
        note: str | None,
        source_key: str | None,
    ) -> tuple[ModelRevision, bool]:
        name = pkg.name
        number = (s.scalar(select(func.max(ModelRevision.revision)).where(ModelRevision.name == name)) or 0) + 1
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
            path=relative,
            sha256=digest,
            note=note,
            source_key=source_key,
            created_at=utcnow(),
        )
        s.add(rev)
        st = s.get(ModelState, name)
        activated = True
        if st is None:
            s.add(ModelState(name=name, active_revision=number, pinned=False))
        elif st.pinned:
            activated = False
        else:
            st.active_revision = number
        s.flush()
        return rev, activated

    def pin(self, name: str, revision: int | None = None) -> dict[str, Any]:
        """Pin the active (or the given) revision: nothing learned or pulled replaces it until unpinned."""
        self.ensure(name)
        with session_scope(self.engine) as s:
            st = s.get(ModelState, name)
            assert st is not None
            if revision is not None:
                self._revision(s, name, revision)
                st.active_revision = revision
            st.pinned = True
        return self.state(name)

    def unpin(self, name: str) -> dict[str, Any]:
        """Let new revisions become active again (the newest one that was not rejected is activated)."""
        self.ensure(name)
        with session_scope(self.engine) as s:
            st = s.get(ModelState, name)
            assert st is not None
            st.pinned = False
            newest = s.scalar(
                select(func.max(ModelRevision.revision)).where(
                    ModelRevision.name == name, or_(ModelRevision.verdict.is_(None), ModelRevision.verdict != REJECTED)
                )
            )
            st.active_revision = int(newest or st.active_revision)
        return self.state(name)

    def rollback(self, name: str, revision: int) -> dict[str, Any]:
        """Make an older revision active and pin it, so the next learning step does not undo the rollback."""
        return self.pin(name, revision)

    # -- the lease: one job at a time changes a model ------------------------------------------------
    def acquire_lease(self, name: str, job_id: int, seconds: float) -> int | None:
        """Take the model's lease for ``job_id``; returns ``None`` when taken, else the job holding it.

        A lease is free when nobody holds it, when it expired, or when its holder's job is not held by a live
        runner: not RUNNING (the process that ran it died and the job was queued again) or RUNNING past its
        job lease (its runner stopped answering; the job is taken over, and its new runner, with the same
        job id, takes this lease too).
        """
        self.ensure(name)
        now = utcnow()
        running = (
            select(Job.id)
            .where(Job.state == JobState.RUNNING, or_(Job.lease_until.is_(None), Job.lease_until >= now))
            .scalar_subquery()
        )
        with session_scope(self.engine) as s:
            taken = s.execute(
                update(ModelState)
                .where(
                    ModelState.name == name,
                    or_(
                        ModelState.lease_job_id.is_(None),
                        ModelState.lease_job_id == job_id,
                        ModelState.lease_until < now,
                        ModelState.lease_job_id.not_in(running),
                    ),
                )
                .values(lease_job_id=job_id, lease_until=now + timedelta(seconds=seconds))
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return None
            holder = s.scalar(select(ModelState.lease_job_id).where(ModelState.name == name))
        return int(holder) if holder is not None else -1

    def renew_lease(self, name: str, job_id: int, seconds: float) -> bool:
        """Extend the lease ``job_id`` holds by ``seconds`` from now; ``False`` when it no longer holds it
        (it expired and another job took it): the caller's step must not be recorded."""
        with session_scope(self.engine) as s:
            renewed = s.execute(
                update(ModelState)
                .where(ModelState.name == name, ModelState.lease_job_id == job_id)
                .values(lease_until=utcnow() + timedelta(seconds=seconds))
                .execution_options(synchronize_session=False)
            )
            return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]

    def release_lease(self, name: str, job_id: int) -> None:
        """Give the lease back (only its holder can)."""
        with session_scope(self.engine) as s:
            s.execute(
                update(ModelState)
                .where(ModelState.name == name, ModelState.lease_job_id == job_id)
                .values(lease_job_id=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )

    @staticmethod
    def _revision(s: Session, name: str, revision: int) -> ModelRevision:
        rev = s.scalar(select(ModelRevision).where(ModelRevision.name == name, ModelRevision.revision == revision))
        if rev is None:
            raise RegistryError(f"model {name!r} has no revision {revision}")
        return rev


def _zoo_bytes(name: str) -> bytes:
    """The shipped package file of ``name``, exactly as shipped."""
    from models.zoo import definition, package_path

    definition(name)
    return package_path(name).read_bytes()
