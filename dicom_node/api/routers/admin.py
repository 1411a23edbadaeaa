"""``/jobs``, ``/dead-letters``, ``/models``, ``/audit``: what the node is doing and which model it uses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from dicom_node.api.deps import Admin, DbSession, RowId, Services
from dicom_node.api.schemas import VersionRequest
from dicom_node.core import jobs
from dicom_node.core.db import Job, JobState
from dicom_node.core.review_tables import AuditEvent
from dicom_node.work import admin as acts

router = APIRouter()


@router.get("/jobs", tags=["jobs"])
def list_jobs(
    session: DbSession,
    _admin: Admin,
    state: JobState | None = Query(None),
    kind: str | None = Query(None),
    limit: int = Query(200, ge=1, le=2000),
) -> dict[str, Any]:
    """Jobs, newest first."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == state)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return {"jobs": [j.as_dict() for j in session.scalars(query)]}


@router.get("/dead-letters", tags=["jobs"])
def dead_letters(session: DbSession, _admin: Admin) -> dict[str, Any]:
    """Jobs that ran out of attempts and wait for a person."""
    return {"jobs": [j.as_dict() for j in jobs.dead_letters(session)]}


@router.post("/dead-letters/{job_id}/requeue", tags=["jobs"])
def requeue(job_id: RowId, session: DbSession, operator: Admin) -> dict[str, Any]:
    """Put a dead job back in the queue with fresh attempts."""
    return {"job": acts.requeue_dead_letter(session, job_id, operator).as_dict()}


@router.get("/models", tags=["models"])
def list_models(services: Services, _admin: Admin) -> dict[str, Any]:
    """Every model the node has, with its active revision."""
    names = sorted({*services.registry.names(), *(r.model for r in services.config.routing)})
    return {"models": [services.registry.state(n) for n in names]}


@router.get("/models/{name}", tags=["models"])
def model(name: str, services: Services, _admin: Admin) -> dict[str, Any]:
    """A model's revisions (with each learned revision's verdict on the reference set), the active one,
    whether it is pinned, and the approved series kept on site for guarded learning."""
    return {**services.registry.state(name), "site_cases": services.site_cases.listing(name)}


@router.post("/models/{name}/pin", tags=["models"])
def pin(name: str, body: VersionRequest, services: Services, session: DbSession, operator: Admin) -> dict[str, Any]:
    """Pin the active (or the given) revision: learning and sync no longer replace it."""
    return acts.pin_model(services.registry, session, name, body.revision, operator)


@router.post("/models/{name}/unpin", tags=["models"])
def unpin(name: str, services: Services, session: DbSession, operator: Admin) -> dict[str, Any]:
    """Unpin: the newest revision that the guard did not reject becomes active again."""
    return acts.unpin_model(services.registry, session, name, operator)


@router.post("/models/{name}/rollback", tags=["models"])
def rollback(
    name: str, body: VersionRequest, services: Services, session: DbSession, operator: Admin
) -> dict[str, Any]:
    """Go back to an older revision (and pin it)."""
    return acts.rollback_model(services.registry, session, name, body.revision, operator)


@router.get("/audit", tags=["audit"])
def audit(session: DbSession, _admin: Admin, limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
    """Decisions and administrative acts, newest first."""
    rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
    return {"events": [e.as_dict() for e in rows]}
