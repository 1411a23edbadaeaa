"""The audit log of the federation server: who added, re-keyed or revoked a site, what was published or
rejected, and when. Each entry is written in the transaction of its action (both or neither), kept in the
registry database and read with ``laurel federation audit``. No keys, no weights, no patient data.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from federation.server.tables import AuditRow, session_scope, utcnow

#: The actor of actions the server takes by itself (the update worker).
SERVER = "server"

SITE_ADD = "site.add"
SITE_ROTATE_KEY = "site.rotate_key"
SITE_REVOKE = "site.revoke"
SITE_MODELS = "site.models"
VERSION_PUBLISH = "version.publish"
UPDATE_REJECT = "update.reject"
UPDATE_FAIL = "update.fail"


@dataclass(frozen=True)
class AuditEntry:
    """One audited action."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


def local_admin() -> str:
    """The actor of a command run on the server's host: ``cli:<login>`` (``SUDO_USER`` first)."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"[:128]


def record(session: Session, action: str, target: str, *, actor: str, detail: dict[str, Any] | None = None) -> None:
    """Add an entry to the session's transaction (the caller commits it with the action)."""
    session.add(AuditRow(at=utcnow(), actor=actor[:128], action=action, target=target[:128], detail=detail or {}))


def entries(sessions: sessionmaker[Session], *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
    """The newest entries first."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if action:
        query = query.where(AuditRow.action == action)
    with session_scope(sessions) as s:
        return [
            AuditEntry(
                id=r.id,
                at=r.at if r.at.tzinfo else r.at.replace(tzinfo=dt.UTC),
                actor=r.actor,
                action=r.action,
                target=r.target,
                detail=dict(r.detail or {}),
            )
            for r in s.scalars(query)
        ]
