"""Claims of the job queue in SQL: which jobs are due, taking one under a lease, and releasing the jobs of ended
processes (see :mod:`dicom_node.core.jobs` for the rules; :class:`dicom_node.core.jobs.JobRunner` calls these).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from dicom_node.core.db import Job, JobState, utcnow
from dicom_node.core.owners import Owner, host_name, owner_alive

logger = logging.getLogger(__name__)

#: Called with the session, the job's payload and its last error when a job becomes a dead letter.
DeadHandler = Callable[[Session, dict[str, Any], str], None]

#: The dead handler under this key runs for a dead letter of any kind, with ``{job_id, kind, attempts, payload}``
#: instead of the payload (e.g. the ``job.dead`` webhook event).
ANY_KIND = "*"


def held(claimed_by: str, claimed_at: datetime | None) -> list[ColumnElement[bool]]:
    """The conditions under which a claim still holds its job."""
    return [Job.state == JobState.RUNNING, Job.claimed_by == claimed_by, Job.started_at == claimed_at]


def run_dead_handler(session: Session, job: Job, error: str, dead_handlers: Mapping[str, DeadHandler]) -> None:
    """What a dead letter of the job's kind means for the rest of the state, in the DEAD transaction (a failure
    of it is logged; the job stays DEAD). The :data:`ANY_KIND` handler runs after the kind's own."""
    calls: list[tuple[DeadHandler, dict[str, Any]]] = []
    if job.kind in dead_handlers:
        calls.append((dead_handlers[job.kind], dict(job.payload or {})))
    if ANY_KIND in dead_handlers:
        described = {"job_id": job.id, "kind": job.kind, "attempts": job.attempts, "payload": dict(job.payload or {})}
        calls.append((dead_handlers[ANY_KIND], described))
    for handler, argument in calls:
        try:
            with session.begin_nested():
                handler(session, argument, error)
        except Exception:
            logger.exception("job %s (%s): recording what its dead letter means failed", job.id, job.kind)


def _orphaned(claimed_by: str | None, host: str) -> bool:
    """Whether a RUNNING job's claimer is known to be gone: no claimer recorded, or a dead process of ``host``."""
    if claimed_by is None:
        return True  # claimed before claims were recorded (Laurel ≤ 0.2): one runner per database then
    owner = Owner.parse(claimed_by)
    if owner is None or owner.host != host:
        return False
    return not owner_alive(owner)


def _give_up(session: Session, job: Job, error: str, now: datetime, dead_handlers: Mapping[str, DeadHandler]) -> None:
    job.state = JobState.DEAD
    job.last_error = error
    job.finished_at = now
    job.lease_until = None
    job.updated_at = now
    run_dead_handler(session, job, error, dead_handlers)


def recover_interrupted(
    session: Session,
    max_attempts: int,
    dead_handlers: Mapping[str, DeadHandler] | None = None,
    *,
    host: str | None = None,
) -> int:
    """RUNNING jobs whose claimer is gone (a dead process of this host): back to QUEUED, or DEAD when they have
    used all their attempts. Jobs of live processes and of other hosts are left to their leases."""
    host = host or host_name()
    now = utcnow()
    count = 0
    for job in session.scalars(select(Job).where(Job.state == JobState.RUNNING).with_for_update()):
        if not _orphaned(job.claimed_by, host):
            continue
        limit = job.max_attempts or max_attempts
        if job.attempts >= limit:
            _give_up(
                session,
                job,
                f"interrupted by a stop or crash on each of {job.attempts} attempts",
                now,
                dead_handlers or {},
            )
        else:
            job.state = JobState.QUEUED
            job.next_run_at = now
            job.lease_until = None
            job.updated_at = now
        count += 1
    if count:
        logger.warning("%d jobs were running in processes of this host that ended; they are queued again", count)
    return count


def due(now: datetime, kinds: Sequence[str], exclude: Sequence[int] = ()) -> ColumnElement[bool]:
    """Jobs of ``kinds`` that may be claimed: due QUEUED/FAILED ones, and RUNNING ones whose lease expired
    (``exclude``: the claimer's own jobs; a lapsed lease of its own is renewed, not retaken)."""
    expired = and_(Job.state == JobState.RUNNING, or_(Job.lease_until.is_(None), Job.lease_until < now))
    condition = and_(
        or_(and_(Job.state.in_([JobState.QUEUED, JobState.FAILED]), Job.next_run_at <= now), expired),
        Job.kind.in_(list(kinds)),
    )
    return and_(condition, Job.id.not_in(list(exclude))) if exclude else condition


def claim_due(
    session: Session,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    kinds: Sequence[str],
    exclude: Sequence[int],
    max_attempts: int,
    dead_handlers: Mapping[str, DeadHandler],
) -> Job | None:
    """Take one due job for ``owner`` until ``now + lease`` in the session's transaction (the caller commits).

    PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` then the update. SQLite: a conditional ``UPDATE`` on the
    row as read (exactly one claimer sees rowcount 1). A RUNNING job whose lease expired and whose attempts
    are spent becomes DEAD instead.
    """
    skip_locked = session.get_bind().dialect.name == "postgresql"
    query = (
        select(Job.id, Job.kind, Job.state, Job.attempts, Job.max_attempts, Job.claimed_by, Job.lease_until)
        .where(due(now, kinds, exclude))
        .order_by(Job.next_run_at, Job.id)
    )
    for _round in range(8):
        if skip_locked:
            rows = session.execute(query.limit(1).with_for_update(skip_locked=True, of=Job)).all()
        else:
            rows = session.execute(query.limit(8)).all()
        if not rows:
            return None
        for row in rows:
            taken = _take(
                session,
                row,
                now=now,
                owner=owner,
                lease=lease,
                max_attempts=max_attempts,
                dead_handlers=dead_handlers,
                conditional=not skip_locked,
            )
            if taken is not None:
                return taken
    return None


def _take(
    session: Session,
    row: Any,
    *,
    now: datetime,
    owner: str,
    lease: timedelta,
    max_attempts: int,
    dead_handlers: Mapping[str, DeadHandler],
    conditional: bool,
) -> Job | None:
    """Claim the job of ``row`` (or bury it: an expired lease on its last attempt); ``None`` if not claimed."""
    where: list[ColumnElement[bool]] = [Job.id == row.id, Job.state == row.state]
    if conditional:  # SQLite: the row as read must still be claimable
        if row.state == JobState.RUNNING:
            where.append(Job.claimed_by.is_(None) if row.claimed_by is None else Job.claimed_by == row.claimed_by)
            where.append(Job.lease_until.is_(None) if row.lease_until is None else Job.lease_until < now)
        else:
            where.append(Job.next_run_at <= now)
    if row.state == JobState.RUNNING:
        if row.attempts >= (row.max_attempts or max_attempts):
            error = f"its runner stopped answering (lease expired) on each of {row.attempts} attempts"
            buried = session.execute(
                update(Job)
                .where(*where)
                .values(state=JobState.DEAD, last_error=error, finished_at=now, lease_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if buried.rowcount == 1:  # type: ignore[attr-defined]
                logger.error("job %s (%s): %s; now a dead letter", row.id, row.kind, error)
                job = session.get(Job, row.id, populate_existing=True)
                if job is not None:
                    run_dead_handler(session, job, error, dead_handlers)
            return None
        logger.warning("job %s: the lease of %s expired; taken over", row.id, row.claimed_by or "a runner")
    result = session.execute(
        update(Job)
        .where(*where)
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            claimed_by=owner,
            started_at=now,
            lease_until=now + lease,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Job, row.id, populate_existing=True)
