"""Operator bearer tokens for the node API: created once, stored as SHA-256, revocable.

A token is 32 random bytes (``secrets.token_urlsafe``): with that much entropy a fast hash is the right
store (as for GitHub or PyPI tokens); a slow password hash would only slow every API call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.db import utcnow
from dicom_node.core.review_tables import ApiToken

TOKEN_PREFIX = "lrl_"  # noqa: S105 - a prefix, not a secret


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, operator: str) -> str:
    """Create a token for ``operator`` and return it; it is never shown again. The caller commits."""
    operator = operator.strip()
    if not operator or len(operator) > 128:
        raise ValueError("the operator name must be 1 to 128 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(operator=operator, token_sha256=_digest(token), prefix=token[:10]))
    return token


def operator_for(session: Session, token: str) -> str | None:
    """The operator a valid, unrevoked token belongs to, else ``None``; stamps ``last_used_at``."""
    digest = _digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    row.last_used_at = utcnow()
    return row.operator


def revoke_tokens(session: Session, operator: str) -> int:
    """Revoke every token of ``operator``; returns how many. The caller commits."""
    rows = session.scalars(select(ApiToken).where(ApiToken.operator == operator, ApiToken.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)
