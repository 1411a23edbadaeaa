"""Events for the configured webhooks: each becomes ``webhook`` jobs in the transaction of its cause.

========================= ================================================ =====================================
event                     when (the transaction that records it)           ``data`` in the body
========================= ================================================ =====================================
``study.pending_review``  a draft is ready (segment, resegment, amend)      ``study``: id, state
``study.failed``          no series could be segmented, or ``segment`` died ``study``: id, state, reason
``study.exported``        the last write-back of an approval was delivered ``study``: id, state
``job.dead``              any job but a ``webhook`` became a dead letter    ``job``: id, kind, attempts, error;
                                                                           ``study_id`` when the job names one
========================= ================================================ =====================================

Exactly once: the jobs are added to the session that changes the state, so both commit or neither does. Each
event has an id (``id`` in the body, ``X-Laurel-Delivery`` and ``Idempotency-Key`` headers) kept in the job's
payload: a delivery repeated after a crash carries the same id, so the receiver can recognise it.

No patient data: bodies carry the node's internal ids and states only, never names, patient IDs or UIDs;
a reason or error text has anything shaped like a UID replaced by ``<UID>`` (it may quote a file path).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from dicom_node.core.db import Study, StudyState, utcnow
from dicom_node.core.jobs import enqueue

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dicom_node.core.config import NodeConfig

logger = logging.getLogger(__name__)

WEBHOOK_JOB = "webhook"
_STUDY_EVENTS = {
    StudyState.PENDING_REVIEW: "study.pending_review",
    StudyState.FAILED: "study.failed",
    StudyState.EXPORTED: "study.exported",
}
_UID_LIKE = re.compile(r"\d+(?:\.\d+){3,}")
_TEXT_MAX = 500


def scrub(text: str | None) -> str | None:
    """A reason or error for a webhook body: UIDs replaced by ``<UID>``, at most 500 characters."""
    if text is None:
        return None
    cleaned = _UID_LIKE.sub("<UID>", text)
    return cleaned if len(cleaned) <= _TEXT_MAX else cleaned[: _TEXT_MAX - 1] + "…"


class Events:
    """Turns state changes into ``webhook`` jobs for the webhooks subscribed to them."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config

    def emit(self, session: Session, event: str, data: dict[str, Any]) -> str | None:
        """Queue one delivery per subscribed webhook in ``session``; returns the event id (None: nobody listens)."""
        hooks = [h for h in self.config.webhooks if event in h.events]
        if not hooks:
            return None
        event_id = uuid.uuid4().hex
        body = {
            "id": event_id,
            "event": event,
            "created_at": utcnow().isoformat() + "Z",
            "node": self.config.node.ae_title,
            **data,
        }
        for hook in hooks:
            enqueue(
                session,
                WEBHOOK_JOB,
                {"webhook": hook.name, "event": event, "event_id": event_id, "body": body},
                dedupe_key=f"webhook:{hook.name}:{event_id}",
                max_attempts=hook.max_attempts,
            )
        logger.info("event %s (%s) queued for %d webhook(s)", event, event_id, len(hooks))
        return event_id

    def study_changed(self, session: Session, study: Study) -> str | None:
        """The event of the study's new state, if it has one (call after ``set_study_state``)."""
        event = _STUDY_EVENTS.get(StudyState(study.state))
        if event is None:
            return None
        info: dict[str, Any] = {"id": study.id, "state": str(study.state)}
        if study.state == StudyState.FAILED:
            info["reason"] = scrub(study.failure_reason)
        return self.emit(session, event, {"study": info})

    def job_dead(self, session: Session, dead: dict[str, Any], error: str) -> None:
        """A dead letter (the queue's any-kind dead handler: ``dead`` names the job); ``webhook`` jobs excepted,
        so an unreachable receiver does not feed itself events."""
        if dead.get("kind") == WEBHOOK_JOB:
            return
        data: dict[str, Any] = {
            "job": {
                "id": dead.get("job_id"),
                "kind": dead.get("kind"),
                "attempts": dead.get("attempts"),
                "error": scrub(error),
            }
        }
        study_id = (dead.get("payload") or {}).get("study_id")
        if study_id is not None:
            data["study_id"] = int(study_id)
        self.emit(session, "job.dead", data)
