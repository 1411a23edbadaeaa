"""The persistent job queue: one row per side effect, claimed atomically, retried, never lost.

Job kinds and their handlers (each documented where it is registered):

========== ====================================== ==========================================================
kind       payload                                handler
========== ====================================== ==========================================================
segment    ``{"study_id": int}``                  pipeline (registered by pipeline code via Node)
export     ``{"peer": str, "paths": [str], ...}`` :func:`dicom_node.work.export.export_handler`
retention  ``{}``                                 :func:`dicom_node.work.retention.retention_handler`
========== ====================================== ==========================================================

Lifecycle: ``QUEUED`` → ``RUNNING`` → ``DONE``; a handler exception → ``FAILED`` with ``next_run_at`` after an
exponential backoff with full jitter (``uniform(0, min(max, base * 2**attempts))``), claimed again when due;
after ``max_attempts`` attempts, or at once for :class:`PermanentJobError`, → ``DEAD`` (a dead letter that a
person can requeue with ``laurel requeue JOB_ID``); a kind may register what a dead letter means for the
rest of the state (``on_dead``: e.g. a dead ``segment`` job marks its study FAILED with the reason).
:class:`JobDeferred` puts a job back for a while without spending an attempt (the resource it needs is
busy: e.g. another job holds the model's learning lease); :class:`JobInterrupted` (or a fault point reached
while the node stops) puts it back at once. A job is claimed with
``UPDATE job SET state='RUNNING' WHERE id=? AND state=<as read>`` (exactly one claimer sees rowcount 1, on
SQLite and PostgreSQL alike). Jobs left RUNNING by a crash go back to QUEUED when the runner starts (one
runner process per database, as ``laurel serve`` runs it).

Handlers are ``fn(ctx: JobContext, payload: dict) -> dict | None``; the returned dict becomes ``job.result``.
They must be idempotent: a crash between their side effect and the DONE commit repeats them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from dicom_node.core.config import JobsSection
from dicom_node.core.db import Job, JobState, session_scope, utcnow
from dicom_node.core.metrics import NodeMetrics

logger = logging.getLogger(__name__)

#: Job kinds queued by the intake process's scheduler (their handlers run in the workers).
RETENTION_JOB = "retention"
SYNC_JOB = "sync"


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job becomes DEAD at once with this message."""


class JobInterrupted(Exception):
    """Raised by a handler that stopped because the node stops: queued again, no attempt spent."""


class JobDeferred(Exception):
    """Raised by a handler that cannot run yet (a resource is busy): queued again after ``delay`` seconds,
    no attempt spent."""

    def __init__(self, reason: str, delay: float = 5.0) -> None:
        super().__init__(reason)
        self.delay = delay


def fault_point(name: str, ctx: JobContext) -> None:
    """A named fault point inside a job (see :mod:`models.faults`); a stop while held interrupts the job."""
    from models.faults import FaultInterrupted, reach

    try:
        reach(name, ctx.stop_event)
    except FaultInterrupted as exc:
        raise JobInterrupted(str(exc)) from exc


@dataclass
class JobContext:
    """What a handler gets besides its payload."""

    job_id: int
    kind: str
    attempt: int
    engine: Engine
    saved: dict[str, Any] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)
    created_at: datetime | None = None

    @property
    def stopping(self) -> bool:
        """True when the node is stopping; long handlers check it and raise :class:`JobInterrupted`."""
        return self.stop_event.is_set()

    def checkpoint(self, data: Mapping[str, Any]) -> None:
        """Merge ``data`` into the job's saved state and commit it now (survives a retry or a crash)."""
        self.saved.update(data)
        with session_scope(self.engine) as session:
            session.execute(
                update(Job)
                .where(Job.id == self.job_id)
                .values(result=dict(self.saved), updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )


Handler = Callable[[JobContext, dict[str, Any]], dict[str, Any] | None]
#: Called with the session, the job's payload and its last error when a job becomes a dead letter.
DeadHandler = Callable[[Session, dict[str, Any], str], None]


def enqueue(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    dedupe_key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Add a job (the caller commits). With ``dedupe_key``, an existing job with that key is returned instead.

    The key stays taken after the job is done: a key names one side effect, done once.
    """
    if dedupe_key is not None:
        existing = session.scalar(select(Job).where(Job.dedupe_key == dedupe_key))
        if existing is not None:
            return existing
    now = utcnow()
    job = Job(
        kind=kind,
        state=JobState.QUEUED,
        payload=dict(payload),
        dedupe_key=dedupe_key,
        attempts=0,
        max_attempts=max_attempts,
        next_run_at=run_at or now,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    logger.info("job %s (%s) queued", job.id, kind)
    return job


def requeue(session: Session, job_id: int) -> Job:
    """Put a DEAD or FAILED job back in the queue, due now, with its attempts reset (the caller commits)."""
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"there is no job {job_id}")
    if job.state not in (JobState.DEAD, JobState.FAILED):
        raise ValueError(f"job {job_id} is {job.state}; only DEAD or FAILED jobs can be requeued")
    now = utcnow()
    job.state = JobState.QUEUED
    job.attempts = 0
    job.next_run_at = now
    job.updated_at = now
    job.finished_at = None
    logger.info("job %s (%s) requeued", job.id, job.kind)
    return job


def dead_letters(session: Session) -> list[Job]:
    """Jobs that gave up (DEAD), oldest first."""
    return list(session.scalars(select(Job).where(Job.state == JobState.DEAD).order_by(Job.id)))


def list_jobs(session: Session, *, state: str | None = None, kind: str | None = None, limit: int = 200) -> list[Job]:
    """Jobs, newest first, optionally filtered by state and kind."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    return list(session.scalars(query))


def backoff_delay(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next attempt: full jitter, ``uniform(0, min(cap, base * 2**attempts))``."""
    ceiling = min(cap, base * (2 ** min(attempts, 60)))
    return (rng or random).uniform(0, ceiling)


def recover_interrupted(
    session: Session, max_attempts: int, dead_handlers: Mapping[str, DeadHandler] | None = None
) -> int:
    """Jobs left RUNNING by a crash: back to QUEUED, or DEAD when they have used all their attempts."""
    now = utcnow()
    count = 0
    for job in session.scalars(select(Job).where(Job.state == JobState.RUNNING)):
        limit = job.max_attempts or max_attempts
        if job.attempts >= limit:
            job.state = JobState.DEAD
            job.last_error = f"interrupted by a node stop or crash on each of {job.attempts} attempts"
            job.finished_at = now
            if dead_handlers and job.kind in dead_handlers:
                dead_handlers[job.kind](session, dict(job.payload or {}), job.last_error)
        else:
            job.state = JobState.QUEUED
            job.next_run_at = now
        job.updated_at = now
        count += 1
    if count:
        logger.warning("%d jobs were running when the node last stopped; they are queued again", count)
    return count


class JobRunner:
    """Worker threads that claim due jobs and run their handlers."""

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, Handler] | None = None,
        config: JobsSection | None = None,
        *,
        metrics: NodeMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.dead_handlers: dict[str, DeadHandler] = {}
        self.config = config or JobsSection()
        self.metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def add_handler(self, kind: str, handler: Handler) -> None:
        """Register (or replace) the handler of a job kind; jobs of kinds without one wait in the queue."""
        self.handlers[kind] = handler
        self.notify()

    def on_dead(self, kind: str, handler: DeadHandler) -> None:
        """What a dead letter of ``kind`` means for the rest of the state (run in the DEAD transaction)."""
        self.dead_handlers[kind] = handler

    def notify(self) -> None:
        """Something was queued: look now instead of at the next poll."""
        self._wake.set()

    def start(self, *, recover: bool = True) -> None:
        """Start the workers; ``recover`` first queues again the jobs a crash left RUNNING (only right when no
        other runner works on this database: the supervisor recovers once, before its workers start)."""
        if recover:
            with session_scope(self.engine) as session:
                recover_interrupted(session, self.config.max_attempts, self.dead_handlers)
        self._stop.clear()
        for n in range(self.config.workers):
            thread = threading.Thread(target=self._work, name=f"laurel-jobs-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the workers to stop after their current job and wait for them."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("job worker %s still busy at stop; its job is recovered at the next start", thread.name)
        self._threads = []

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:
                logger.exception("job worker error (database unavailable?)")
                ran = False
            if not ran:
                self._wake.wait(self.config.poll_seconds)
                self._wake.clear()

    def claim(self) -> Job | None:
        """Atomically take one due job of a kind with a handler (``None`` when there is none)."""
        kinds = list(self.handlers)
        if not kinds:
            return None
        now = utcnow()
        with self.engine.begin() as conn:
            candidates = conn.execute(
                select(Job.id, Job.state)
                .where(
                    Job.state.in_([JobState.QUEUED, JobState.FAILED]),
                    Job.next_run_at <= now,
                    Job.kind.in_(kinds),
                )
                .order_by(Job.next_run_at, Job.id)
                .limit(8)
            ).all()
            for job_id, state in candidates:
                result = conn.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == state)
                    .values(state=JobState.RUNNING, attempts=Job.attempts + 1, started_at=now, updated_at=now)
                )
                if result.rowcount == 1:
                    break
            else:
                return None
        with session_scope(self.engine) as session:
            return session.get(Job, job_id)

    def run_once(self) -> bool:
        """Claim and run one job; ``False`` when nothing was due."""
        job = self.claim()
        if job is None:
            return False
        self._run(job)
        return True

    def _on_dead(self, session: Session, job: Job, error: str) -> None:
        try:
            with session.begin_nested():
                self.dead_handlers[job.kind](session, dict(job.payload or {}), error)
        except Exception:
            logger.exception("job %s (%s): recording what its dead letter means failed", job.id, job.kind)

    def _run(self, job: Job) -> None:
        handler = self.handlers[job.kind]
        ctx = JobContext(
            job.id, job.kind, job.attempts, self.engine, dict(job.result or {}), self._stop, job.created_at
        )
        started = time.perf_counter()
        outcome = "done"
        values: dict[str, Any]
        try:
            result = handler(ctx, dict(job.payload or {}))
        except JobInterrupted:
            outcome = "interrupted"
            values = {"state": JobState.QUEUED, "attempts": max(0, job.attempts - 1), "next_run_at": utcnow()}
            logger.info("job %s (%s) interrupted by the stop; queued again", job.id, job.kind)
        except JobDeferred as exc:
            outcome = "deferred"
            values = {
                "state": JobState.QUEUED,
                "attempts": max(0, job.attempts - 1),
                "next_run_at": utcnow() + timedelta(seconds=exc.delay),
                "last_error": f"deferred: {exc}",
            }
            logger.info("job %s (%s) deferred %.1f s: %s", job.id, job.kind, exc.delay, exc)
        except PermanentJobError as exc:
            outcome = "dead"
            values = {
                "state": JobState.DEAD,
                "last_error": str(exc) or type(exc).__name__,
                "finished_at": utcnow(),
            }
            logger.error("job %s (%s) failed permanently: %s", job.id, job.kind, exc)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            limit = job.max_attempts or self.config.max_attempts
            if job.attempts >= limit:
                outcome = "dead"
                values = {"state": JobState.DEAD, "last_error": message, "finished_at": utcnow()}
                logger.error(
                    "job %s (%s) failed %d times, now a dead letter: %s",
                    job.id,
                    job.kind,
                    job.attempts,
                    message,
                )
            else:
                outcome = "retry"
                delay = backoff_delay(
                    job.attempts, self.config.backoff_base_seconds, self.config.backoff_max_seconds, self._rng
                )
                values = {
                    "state": JobState.FAILED,
                    "last_error": message,
                    "next_run_at": utcnow() + timedelta(seconds=delay),
                }
                logger.warning(
                    "job %s (%s) attempt %d failed, retry in %.1f s: %s",
                    job.id,
                    job.kind,
                    job.attempts,
                    delay,
                    message,
                )
            logger.debug("job %s traceback", job.id, exc_info=True)
        else:
            saved = dict(ctx.saved)
            if result:
                saved.update(result)
            values = {"state": JobState.DONE, "result": saved or None, "finished_at": utcnow()}
            logger.info("job %s (%s) done", job.id, job.kind)
        values["updated_at"] = utcnow()
        if outcome != "done" and ctx.saved:
            values["result"] = dict(ctx.saved)
        with session_scope(self.engine) as session:
            session.execute(
                update(Job).where(Job.id == job.id).values(**values).execution_options(synchronize_session=False)
            )
            if values["state"] == JobState.DEAD and job.kind in self.dead_handlers:
                self._on_dead(session, job, str(values.get("last_error") or ""))
        if self.metrics is not None:
            self.metrics.jobs_finished.labels(kind=job.kind, outcome=outcome).inc()
            self.metrics.job_seconds.labels(kind=job.kind).observe(time.perf_counter() - started)
