"""Administrative acts, each audited with who did it: requeue a dead letter, pin, unpin, roll back a model.

The admin API (``dicom_node.api.routers.admin``) and the console (``dicom_node.api.console``) call these, so
both check the same things and write the same audit rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from dicom_node.core import jobs
from dicom_node.core.db import Job, JobState
from dicom_node.core.review_tables import AuditEvent
from dicom_node.work.learning import ModelRegistry
from dicom_node.work.review import NotFound, ReviewConflict


def requeue_dead_letter(session: Session, job_id: int, operator: str) -> Job:
    """Put a DEAD job back in the queue with fresh attempts (the caller commits)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    if job.state != JobState.DEAD:
        raise ReviewConflict(f"job {job_id} is {job.state}; only DEAD jobs can be requeued")
    jobs.requeue(session, job_id)
    session.add(AuditEvent(operator=operator, action="requeue", detail={"job_id": job_id, "kind": job.kind}))
    return job


def pin_model(
    registry: ModelRegistry, session: Session, name: str, revision: int | None, operator: str
) -> dict[str, Any]:
    """Pin the active (or the given) revision: learning and sync no longer replace it."""
    state = registry.pin(name, revision)
    session.add(AuditEvent(operator=operator, action="pin", detail={"model": name, "revision": revision}))
    return state


def unpin_model(registry: ModelRegistry, session: Session, name: str, operator: str) -> dict[str, Any]:
    """Unpin: the newest revision that the guard did not reject becomes active again."""
    state = registry.unpin(name)
    session.add(AuditEvent(operator=operator, action="unpin", detail={"model": name}))
    return state


def rollback_model(
    registry: ModelRegistry, session: Session, name: str, revision: int | None, operator: str
) -> dict[str, Any]:
    """Go back to an older revision (and pin it)."""
    if revision is None:
        raise ReviewConflict("a rollback needs the revision to go back to")
    state = registry.rollback(name, revision)
    session.add(AuditEvent(operator=operator, action="rollback", detail={"model": name, "revision": revision}))
    return state
