"""Who is using the console: admin login by token, the session cookie, CSRF tokens and one-time login links.

An admin pastes a token (``laurel token create NAME --role admin``) into the login form. The token is checked
as the API checks it (:func:`dicom_node.core.tokens.identity_for`) and never kept: the browser gets a session
cookie (HttpOnly, SameSite=Strict, Path=/console, Secure over HTTPS) that names the token's row and when the
session ends, signed with HMAC-SHA256 under a key kept in ``storage_dir/console.key`` (created on first use,
mode 0600). Every request checks the row again, so revoking the token (or taking its admin role away) ends its
sessions at once.

Every POST form carries a CSRF token, HMAC of the session cookie under the same key (the login form: of a
random nonce in its own cookie); a form without the right one gets 403. ``laurel console-link NAME`` prints a
one-time login URL (valid for two minutes, once) for a browser on the node's host, e.g. headless Chromium.
Requests with ``Authorization: Bearer`` (scripts) are checked as in the API and need no CSRF token: a
browser never adds that header by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.db import utcnow
from dicom_node.core.review_tables import ApiToken
from dicom_node.core.tokens import ADMIN, Identity

logger = logging.getLogger(__name__)

SESSION_COOKIE = "laurel_console"
LOGIN_COOKIE = "laurel_console_login"
COOKIE_PATH = "/console"
SESSION_SECONDS = 8 * 3600
LINK_SECONDS = 120
_KEY_FILE = "console.key"


class LoginRequired(Exception):
    """No valid session or token came with the request (HTTP 401, or a redirect to the login form)."""


class AdminRequired(Exception):
    """A valid identity without the admin role (HTTP 403 with this message)."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(
            f"the console needs an admin token; the token of {identity.name!r} has the role {identity.role!r} "
            "(an admin creates one with `laurel token create NAME --role admin`)"
        )
        self.identity = identity


class CsrfRefused(Exception):
    """A POST form without the right CSRF token (HTTP 403)."""


def console_key(storage_dir: Path) -> bytes:
    """The console's signing key, created once per storage folder (written whole, then linked into place)."""
    path = Path(storage_dir) / _KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".console-key-")
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process that got there first wins
                os.link(tmp, path)  # atomic
        finally:
            Path(tmp).unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != 32:
        raise RuntimeError(f"{path} is damaged ({len(key)} bytes, expected 32): delete it to log everyone out")
    return key


def _mac(key: bytes, *parts: object) -> str:
    return hmac.new(key, ":".join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()


def _admin_row(session: Session, token_id: int) -> ApiToken | None:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return None
    return row


def _identity(row: ApiToken) -> Identity:
    return Identity(name=row.operator, role=row.role)


def session_cookie(key: bytes, row: ApiToken, now: float | None = None) -> str:
    """The cookie value of a new session for this token row."""
    expires = int((now or time.time()) + SESSION_SECONDS)
    return f"v1.{row.id}.{expires}.{_mac(key, 'session', row.id, expires, row.token_sha256)}"


def identity_from_cookie(session: Session, key: bytes, value: str | None) -> Identity | None:
    """Who a session cookie stands for, or ``None`` when it is absent, forged, expired or its token revoked."""
    if not value:
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    token_id, expires = int(parts[1]), int(parts[2])
    if expires < time.time() or token_id > 2**62:
        return None
    row = _admin_row(session, token_id)
    if row is None or not hmac.compare_digest(parts[3], _mac(key, "session", token_id, expires, row.token_sha256)):
        return None
    row.last_used_at = utcnow()
    return _identity(row)


def csrf_token(key: bytes, bound_to: str) -> str:
    """The CSRF token of forms shown with this session cookie (or login nonce)."""
    return _mac(key, "csrf", bound_to)


def check_csrf(key: bytes, bound_to: str | None, sent: str | None) -> None:
    """Raise :class:`CsrfRefused` unless ``sent`` is the CSRF token of ``bound_to``."""
    if not bound_to or not sent or not hmac.compare_digest(sent, csrf_token(key, bound_to)):
        raise CsrfRefused(
            "the form's CSRF token is missing or does not belong to this session: reload the page and submit again"
        )


def require_admin(identity: Identity | None) -> Identity:
    """The identity when it is an admin; :class:`LoginRequired` or :class:`AdminRequired` otherwise."""
    if identity is None:
        raise LoginRequired("log in with an admin token")
    if identity.role != ADMIN:
        raise AdminRequired(identity)
    return identity


# -- one-time login links -------------------------------------------------------------------------------------


def login_link_code(session: Session, key: bytes, operator: str, now: float | None = None) -> str:
    """A one-time login code for ``operator``'s newest admin token (``LookupError`` when there is none)."""
    row = session.scalar(
        select(ApiToken)
        .where(ApiToken.operator == operator, ApiToken.role == ADMIN, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.id.desc())
        .limit(1)
    )
    if row is None:
        raise LookupError(f"{operator!r} has no admin token: create one with `laurel token create NAME --role admin`")
    expires = int((now or time.time()) + LINK_SECONDS)
    nonce = secrets.token_urlsafe(16)
    return f"{row.id}.{expires}.{nonce}.{_mac(key, 'once', row.id, expires, nonce, row.token_sha256)}"


class UsedCodes:
    """One-time codes already used (kept until they expire), so a link logs in once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}

    def first_use(self, nonce: str, expires: float) -> bool:
        """Record ``nonce``; ``False`` when it was used before."""
        now = time.time()
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e >= now}
            if nonce in self._used:
                return False
            self._used[nonce] = expires
            return True


def redeem_link_code(session: Session, key: bytes, code: str, used: UsedCodes) -> ApiToken | None:
    """The admin token row a valid, unexpired, unused one-time code stands for, else ``None``."""
    parts = code.split(".")
    if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    token_id, expires, nonce = int(parts[0]), int(parts[1]), parts[2]
    if expires < time.time() or token_id > 2**62:
        return None
    row = _admin_row(session, token_id)
    if row is None or row.role != ADMIN:
        return None
    if not hmac.compare_digest(parts[3], _mac(key, "once", token_id, expires, nonce, row.token_sha256)):
        return None
    return row if used.first_use(nonce, expires) else None
