"""Sites and their API keys: argon2-hashed, looked up by a public prefix, revocable, per-model permissions.

A key looks like ``lfk_<prefix>_<secret>``: the prefix (12 hex digits) finds the site's row, the argon2 hash
of the whole key proves it. The key is shown once, when the site is added; the server keeps only the hash.
Keys are accepted only in the ``Authorization: Bearer`` header and never logged.

A successful argon2 verification is remembered in memory (by the key's sha256, for ``cache_seconds``) so
that status polls do not pay ~0.1 s of hashing each; revocation still takes effect on the next request,
because the site row is read on every request. Failed authentications are counted per key prefix and per
client address (:class:`federation.server.limits.FailureLimiter`); past the limit, argon2 is not run
(:class:`federation.server.limits.TooManyRequests`), except for a key in the cache of verified keys.
Adding, re-keying, revoking a site and changing its models are written to the audit log in the same
transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update

from federation.server import audit
from federation.server.limits import FailureLimiter
from federation.server.registry import Conflict, NotFound, Registry
from federation.server.tables import SiteRow, session_scope, utcnow

log = logging.getLogger(__name__)

KEY_RE = re.compile(r"^lfk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})$")
SITE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class SiteInfo:
    """A site as the API sees it (never its key or hash)."""

    id: int
    name: str
    models: list[str] | None  # None = every model
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_seen_at: dt.datetime | None

    @property
    def revoked(self) -> bool:
        """Whether the site's key was revoked."""
        return self.revoked_at is not None

    def may_use(self, model: str) -> bool:
        """Whether this site may download, upload and report for ``model``."""
        return self.models is None or model in self.models


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _info(row: SiteRow) -> SiteInfo:
    return SiteInfo(
        id=row.id,
        name=row.name,
        models=None if row.models is None else [str(m) for m in row.models],
        created_at=_aware(row.created_at) or utcnow(),
        revoked_at=_aware(row.revoked_at),
        last_seen_at=_aware(row.last_seen_at),
    )


def new_key() -> tuple[str, str]:
    """A fresh ``(prefix, key)``; the key carries 256 bits of randomness."""
    prefix = secrets.token_hex(6)
    return prefix, f"lfk_{prefix}_{secrets.token_urlsafe(32)}"


class SiteKeys:
    """Adds, revokes and authenticates sites over the registry database."""

    def __init__(self, registry: Registry, *, cache_seconds: float = 300.0, max_concurrent_hashes: int = 2) -> None:
        self.registry = registry
        self.hasher = PasswordHasher()
        # argon2id verifies in ~0.2 s with 64 MiB (its memory_cost): a burst of requests waits its turn here
        self._hashing = threading.BoundedSemaphore(max_concurrent_hashes)
        self.cache_seconds = cache_seconds
        self._verified: dict[bytes, tuple[int, float]] = {}  # sha256(key) -> (site id, verified at)
        self._lock = threading.Lock()

    def add_site(
        self, name: str, models: Sequence[str] | None = None, *, actor: str | None = None
    ) -> tuple[SiteInfo, str]:
        """Create a site and return it with its key (the only time the key exists outside the caller)."""
        if not SITE_NAME_RE.match(name):
            raise ValueError("a site name is 1-64 letters, digits, '.', '_' or '-'")
        prefix, key = new_key()
        with session_scope(self.registry.sessions) as s:
            if s.scalar(select(SiteRow).where(SiteRow.name == name)) is not None:
                raise Conflict(f"a site named {name!r} exists; use rotate-key to issue it a new key")
            row = SiteRow(
                name=name,
                key_prefix=prefix,
                key_hash=self.hasher.hash(key),
                models=None if models is None else sorted(set(models)),
            )
            s.add(row)
            s.flush()
            info = _info(row)
            audit.record(
                s,
                audit.SITE_ADD,
                name,
                actor=actor or audit.local_admin(),
                detail={"models": info.models, "key_prefix": prefix},
            )
        log.info("site %s added (key prefix %s)", name, prefix)
        return info, key

    def rotate_key(self, name: str, *, actor: str | None = None) -> tuple[SiteInfo, str]:
        """Issue a new key to an existing site (the old key stops working); un-revokes the site."""
        prefix, key = new_key()
        with session_scope(self.registry.sessions) as s:
            row = s.scalar(select(SiteRow).where(SiteRow.name == name))
            if row is None:
                raise NotFound(f"no site named {name!r}")
            row.key_prefix, row.key_hash, row.revoked_at = prefix, self.hasher.hash(key), None
            s.flush()
            info = _info(row)
            audit.record(
                s, audit.SITE_ROTATE_KEY, name, actor=actor or audit.local_admin(), detail={"key_prefix": prefix}
            )
        self._forget(info.id)
        log.info("site %s got a new key (key prefix %s)", name, prefix)
        return info, key

    def revoke(self, name: str, *, actor: str | None = None) -> SiteInfo:
        """Revoke a site's key; its next request gets 401."""
        with session_scope(self.registry.sessions) as s:
            row = s.scalar(select(SiteRow).where(SiteRow.name == name))
            if row is None:
                raise NotFound(f"no site named {name!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                audit.record(s, audit.SITE_REVOKE, name, actor=actor or audit.local_admin())
            s.flush()
            info = _info(row)
        self._forget(info.id)
        log.info("site %s revoked", name)
        return info

    def set_models(self, name: str, models: Sequence[str] | None, *, actor: str | None = None) -> SiteInfo:
        """Change which models a site may use (None = all)."""
        with session_scope(self.registry.sessions) as s:
            row = s.scalar(select(SiteRow).where(SiteRow.name == name))
            if row is None:
                raise NotFound(f"no site named {name!r}")
            row.models = None if models is None else sorted(set(models))
            s.flush()
            audit.record(s, audit.SITE_MODELS, name, actor=actor or audit.local_admin(), detail={"models": row.models})
            return _info(row)

    def sites(self) -> list[SiteInfo]:
        """Every site, revoked ones included."""
        with session_scope(self.registry.sessions) as s:
            return [_info(r) for r in s.scalars(select(SiteRow).order_by(SiteRow.name))]

    def _forget(self, site_id: int) -> None:
        with self._lock:
            for k in [k for k, (sid, _) in self._verified.items() if sid == site_id]:
                del self._verified[k]

    def authenticate(
        self, key: str, *, limiter: FailureLimiter | None = None, address: str | None = None
    ) -> SiteInfo | None:
        """The site owning ``key``, or None for a malformed, unknown, wrong or revoked key.

        With ``limiter``, each failure is counted for the key's prefix and ``address``, and argon2 is not
        run while either is over its limit (``TooManyRequests``), unless the key was verified recently.
        """
        match = KEY_RE.match(key)
        if match is None:
            if limiter is not None:
                limiter.failed(None, address)
            return None
        prefix = match.group(1)
        digest = hashlib.sha256(key.encode()).digest()
        with session_scope(self.registry.sessions) as s:
            row = s.scalar(select(SiteRow).where(SiteRow.key_prefix == prefix))
            if row is None or row.revoked_at is not None:
                if limiter is not None:
                    limiter.failed(prefix, address)
                return None
            info = _info(row)
            key_hash = row.key_hash
        if not self._cached(digest, info.id):
            if limiter is not None:
                limiter.check(prefix, address)  # before the ~0.2 s and 64 MiB of argon2
            with self._hashing:
                if limiter is not None:
                    limiter.check(prefix, address)  # again: failures recorded while this request waited
                try:
                    self.hasher.verify(key_hash, key)
                except (VerifyMismatchError, VerificationError, InvalidHashError):
                    if limiter is not None:
                        limiter.failed(prefix, address)
                    return None
            with self._lock:
                self._verified[digest] = (info.id, time.monotonic())
        self._touch(info)
        return info

    def _cached(self, digest: bytes, site_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            for k in [k for k, (_, t) in self._verified.items() if now - t > self.cache_seconds]:
                del self._verified[k]
            for k, (sid, _) in self._verified.items():
                if sid == site_id and hmac.compare_digest(k, digest):
                    return True
        return False

    def _touch(self, info: SiteInfo) -> None:
        now = utcnow()
        if info.last_seen_at is not None and (now - info.last_seen_at).total_seconds() < 60:
            return
        with session_scope(self.registry.sessions) as s:
            s.execute(update(SiteRow).where(SiteRow.id == info.id).values(last_seen_at=now))
