"""The persistent job queue: one row per side effect, claimed under a lease, retried, never lost.

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
while the node stops) puts it back at once.

Claims and leases (any number of runner processes on any number of hosts may share one queue):

* A claim records who holds the job (``claimed_by``: ``host:pid:start``, see :mod:`dicom_node.core.owners`),
  when (``started_at``, which tells one claim from the next) and until when (``lease_until``). On PostgreSQL
  a runner takes the next due job with ``SELECT … FOR UPDATE SKIP LOCKED`` and updates it in the same
  transaction; on SQLite (one writer at a time) with a conditional
  ``UPDATE job SET state='RUNNING' … WHERE id=? AND state=<as read> …`` (exactly one claimer sees rowcount 1).
* A heartbeat thread of each runner extends the leases of the jobs it runs every third of
  ``jobs.lease_seconds``. A RUNNING job whose lease expired (its runner died, hung or lost the database) is
  taken over by any runner, as a new attempt (or made DEAD when its attempts are spent).
* Every later write of a claim (checkpoint, heartbeat, the final DONE/FAILED/DEAD/QUEUED) is conditional on
  ``claimed_by`` and ``started_at`` still being this claim's: a runner that lost its lease records nothing
  (its handler sees ``ctx.lease_lost``; a checkpoint raises :class:`LeaseLost`).
* When a runner starts, RUNNING jobs claimed by processes of *this host* that no longer exist are queued
  again at once (a restarted node resumes without waiting for leases); jobs of live processes and of other
  hosts are left to their leases.

Hosts that share a queue need clocks that agree (NTP) to well under the lease.

Handlers are ``fn(ctx: JobContext, payload: dict) -> dict | None``; the returned dict becomes ``job.result``.
They must be idempotent: a crash between their side effect and the DONE commit repeats them, and so does a
takeover after a lease expired while the first runner still worked.
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

from dicom_node.core.claims import DeadHandler, claim_due, held, recover_interrupted, run_dead_handler
from dicom_node.core.config import JobsSection
from dicom_node.core.db import Job, JobState, session_scope, utcnow
from dicom_node.core.metrics import NodeMetrics
from dicom_node.core.owners import Owner, process_owner

logger = logging.getLogger(__name__)

#: Job kinds queued by the intake process's scheduler (their handlers run in the workers).
RETENTION_JOB = "retention"
SYNC_JOB = "sync"


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help: the job becomes DEAD at once with this message."""


class JobInterrupted(Exception):
    """Raised by a handler that stopped because the node stops: queued again, no attempt spent."""


class LeaseLost(JobInterrupted):
    """The job's lease expired and another runner may hold the job now: stop, record nothing."""


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
    #: The claim this run holds (``None``: a context made outside a runner, e.g. by a test).
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    lost: threading.Event = field(default_factory=threading.Event)

    @property
    def stopping(self) -> bool:
        """True when the node stops or the lease was lost; long handlers check it and raise :class:`JobInterrupted`."""
        return self.stop_event.is_set() or self.lost.is_set()

    @property
    def lease_lost(self) -> bool:
        """True when this run no longer holds the job (another runner may have taken it over)."""
        return self.lost.is_set()

    def checkpoint(self, data: Mapping[str, Any]) -> None:
        """Merge ``data`` into the job's saved state and commit it now (survives a retry or a crash).

        Raises :class:`LeaseLost` when this run no longer holds the job (nothing is written).
        """
        self.saved.update(data)
        statement = update(Job).where(Job.id == self.job_id)
        if self.claimed_by is not None:
            statement = statement.where(*held(self.claimed_by, self.claimed_at))
        with session_scope(self.engine) as session:
            result = session.execute(
                statement.values(result=dict(self.saved), updated_at=utcnow()).execution_options(
                    synchronize_session=False
                )
            )
            written = int(getattr(result, "rowcount", 1) or 0)
        if written == 0 and self.claimed_by is not None:
            self.lost.set()
            raise LeaseLost(f"job {self.job_id} lost its lease; another runner may hold it")


Handler = Callable[[JobContext, dict[str, Any]], dict[str, Any] | None]

__all__ = [
    "DeadHandler",
    "Handler",
    "JobContext",
    "JobDeferred",
    "JobInterrupted",
    "JobRunner",
    "LeaseLost",
    "PermanentJobError",
    "backoff_delay",
    "dead_letters",
    "enqueue",
    "fault_point",
    "list_jobs",
    "recover_interrupted",
    "requeue",
]


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


@dataclass
class _Claim:
    job_id: int
    kind: str
    claimed_at: datetime
    lost: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    """Worker threads that claim due jobs and run their handlers, and a heartbeat that keeps their leases.

    A process that runs jobs (the node, or a worker process on another host) builds one runner on the shared
    engine, registers handlers (:meth:`add_handler`, :meth:`on_dead`), then :meth:`start` and finally
    :meth:`stop`; ``config.workers`` threads claim jobs, ``config.lease_seconds`` is the lease.
    """

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, Handler] | None = None,
        config: JobsSection | None = None,
        *,
        metrics: NodeMetrics | None = None,
        rng: random.Random | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.engine = engine
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.dead_handlers: dict[str, DeadHandler] = {}
        self.config = config or JobsSection()
        self.metrics = metrics
        self._owner = owner
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._halt = threading.Event()  # stops the heartbeat, once the workers are done
        self._heartbeat: threading.Thread | None = None
        self._claims: dict[int, _Claim] = {}
        self._claims_lock = threading.Lock()

    @property
    def owner(self) -> Owner:
        """The process this runner claims jobs as (``host:pid:start``)."""
        return self._owner or process_owner()

    @property
    def lease(self) -> timedelta:
        """How long a claim holds without a heartbeat."""
        return timedelta(seconds=self.config.lease_seconds)

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

    def start(self) -> None:
        """Queue again the jobs of this host's ended processes, then start the workers and the heartbeat."""
        with session_scope(self.engine) as session:
            recover_interrupted(session, self.config.max_attempts, self.dead_handlers, host=self.owner.host)
        self._stop.clear()
        for n in range(self.config.workers):
            thread = threading.Thread(target=self._work, name=f"laurel-jobs-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._halt.clear()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="laurel-jobs-lease", daemon=True)
        self._heartbeat.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the workers to stop after their current job and wait for them (their leases renewed meanwhile)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning(
                    "job worker %s still busy at stop; its job is taken over when its lease expires or this "
                    "host's next runner starts",
                    thread.name,
                )
        self._threads = []
        self._halt.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5.0)
            self._heartbeat = None

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

    # ------------------------------------------------------------------ leases
    def _heartbeat_loop(self) -> None:
        while not self._halt.wait(self.config.lease_seconds / 3):
            try:
                self.heartbeat()
            except Exception:
                logger.exception("job lease heartbeat failed (database unavailable?)")

    def heartbeat(self) -> int:
        """Extend the leases of the jobs this runner runs; returns how many it still holds."""
        with self._claims_lock:
            claims = list(self._claims.values())
        holding = 0
        owner = str(self.owner)
        for claim in claims:
            if claim.lost.is_set():
                continue
            until = utcnow() + self.lease
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(Job).where(Job.id == claim.job_id, *held(owner, claim.claimed_at)).values(lease_until=until)
                )
            if result.rowcount == 1:
                holding += 1
            else:
                claim.lost.set()
                logger.warning(
                    "job %s (%s): lease lost (expired and taken over, or the job was changed); this run will "
                    "record nothing",
                    claim.job_id,
                    claim.kind,
                )
        return holding

    # ------------------------------------------------------------------ claims
    def claim(self) -> Job | None:
        """Take one due job of a kind with a handler under a lease (``None`` when there is none); see
        :func:`dicom_node.core.claims.claim_due`."""
        if not self.handlers:
            return None
        now = utcnow()
        with self._claims_lock:
            mine = list(self._claims)
        with session_scope(self.engine) as session:
            taken = claim_due(
                session,
                owner=str(self.owner),
                now=now,
                lease=self.lease,
                kinds=list(self.handlers),
                exclude=mine,
                max_attempts=self.config.max_attempts,
                dead_handlers=self.dead_handlers,
            )
        if taken is not None:
            with self._claims_lock:
                self._claims[taken.id] = _Claim(taken.id, taken.kind, now)
        return taken

    def run_once(self) -> bool:
        """Claim and run one job; ``False`` when nothing was due."""
        job = self.claim()
        if job is None:
            return False
        try:
            self._run(job)
        finally:
            with self._claims_lock:
                self._claims.pop(job.id, None)
        return True

    def _run(self, job: Job) -> None:
        handler = self.handlers[job.kind]
        with self._claims_lock:
            claim = self._claims.get(job.id) or _Claim(job.id, job.kind, job.started_at or utcnow())
        ctx = JobContext(
            job.id,
            job.kind,
            job.attempts,
            self.engine,
            dict(job.result or {}),
            self._stop,
            job.created_at,
            claimed_by=job.claimed_by,
            claimed_at=job.started_at,
            lost=claim.lost,
        )
        started = time.perf_counter()
        outcome, values = self._outcome(job, handler, ctx)
        values["updated_at"] = utcnow()
        values["lease_until"] = None
        if outcome != "done" and ctx.saved:
            values["result"] = dict(ctx.saved)
        with session_scope(self.engine) as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job.id, *held(str(job.claimed_by), job.started_at))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                logger.warning(
                    "job %s (%s) ended (%s) after its lease was lost; not recorded (another runner holds it)",
                    job.id,
                    job.kind,
                    outcome,
                )
                outcome = "lease_lost"
            elif values["state"] == JobState.DEAD:
                run_dead_handler(session, job, str(values.get("last_error") or ""), self.dead_handlers)
        if self.metrics is not None:
            self.metrics.jobs_finished.labels(kind=job.kind, outcome=outcome).inc()
            self.metrics.job_seconds.labels(kind=job.kind).observe(time.perf_counter() - started)

    def _outcome(self, job: Job, handler: Handler, ctx: JobContext) -> tuple[str, dict[str, Any]]:
        """Run the handler; returns the outcome's name and the values that record it."""
        try:
            result = handler(ctx, dict(job.payload or {}))
        except JobInterrupted as exc:
            why = "lease lost" if isinstance(exc, LeaseLost) else "the stop"
            logger.info("job %s (%s) interrupted by %s; queued again", job.id, job.kind, why)
            return "interrupted", {
                "state": JobState.QUEUED,
                "attempts": max(0, job.attempts - 1),
                "next_run_at": utcnow(),
            }
        except JobDeferred as exc:
            logger.info("job %s (%s) deferred %.1f s: %s", job.id, job.kind, exc.delay, exc)
            return "deferred", {
                "state": JobState.QUEUED,
                "attempts": max(0, job.attempts - 1),
                "next_run_at": utcnow() + timedelta(seconds=exc.delay),
                "last_error": f"deferred: {exc}",
            }
        except PermanentJobError as exc:
            logger.error("job %s (%s) failed permanently: %s", job.id, job.kind, exc)
            return "dead", {
                "state": JobState.DEAD,
                "last_error": str(exc) or type(exc).__name__,
                "finished_at": utcnow(),
            }
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            logger.debug("job %s traceback", job.id, exc_info=True)
            limit = job.max_attempts or self.config.max_attempts
            if job.attempts >= limit:
                logger.error(
                    "job %s (%s) failed %d times, now a dead letter: %s", job.id, job.kind, job.attempts, message
                )
                return "dead", {"state": JobState.DEAD, "last_error": message, "finished_at": utcnow()}
            delay = backoff_delay(
                job.attempts, self.config.backoff_base_seconds, self.config.backoff_max_seconds, self._rng
            )
            logger.warning(
                "job %s (%s) attempt %d failed, retry in %.1f s: %s", job.id, job.kind, job.attempts, delay, message
            )
            return "retry", {
                "state": JobState.FAILED,
                "last_error": message,
                "next_run_at": utcnow() + timedelta(seconds=delay),
            }
        saved = dict(ctx.saved)
        if result:
            saved.update(result)
        logger.info("job %s (%s) done", job.id, job.kind)
        return "done", {"state": JobState.DONE, "result": saved or None, "finished_at": utcnow()}
