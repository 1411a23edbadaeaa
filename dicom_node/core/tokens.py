"""Bearer tokens for the node API: created once with a role, stored as SHA-256, revocable.

Two roles: ``operator`` reviews (worklist, labels, approve, reject, amend); ``admin`` may do that and
everything else (jobs, dead letters, model pin/rollback, audit, console, configuration).

A token is 32 random bytes (``secrets.token_urlsafe``): with that much entropy a fast hash is the right
store (as for GitHub or PyPI tokens); a slow password hash would only slow every API call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.db import utcnow
from dicom_node.core.review_tables import ApiToken

TOKEN_PREFIX = "lrl_"  # noqa: S105 - a prefix, not a secret
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (OPERATOR, ADMIN)


@dataclass(frozen=True)
class Identity:
    """Who sent a request: the person's name (as in the audit log and SEGs) and the token's role."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Whether this identity may use the admin routes."""
        return self.role == ADMIN


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, operator: str, role: str = OPERATOR) -> str:
    """Create a token for ``operator`` with ``role`` and return it; it is never shown again. The caller commits."""
    operator = operator.strip()
    if not operator or len(operator) > 128:
        raise ValueError("the operator name must be 1 to 128 characters")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(operator=operator, token_sha256=_digest(token), prefix=token[:10], role=role))
    return token


def token_row(session: Session, token: str) -> ApiToken | None:
    """The row of a valid, unrevoked token, else ``None``; stamps ``last_used_at``."""
    digest = _digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    row.last_used_at = utcnow()
    return row


def identity_for(session: Session, token: str) -> Identity | None:
    """Who a valid, unrevoked token belongs to, with its role, else ``None``; stamps ``last_used_at``."""
    row = token_row(session, token)
    if row is None:
        return None
    return Identity(name=row.operator, role=row.role if row.role in ROLES else OPERATOR)


def revoke_tokens(session: Session, operator: str) -> int:
    """Revoke every token of ``operator``; returns how many. The caller commits."""
    rows = session.scalars(select(ApiToken).where(ApiToken.operator == operator, ApiToken.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)
