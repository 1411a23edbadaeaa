"""The persistent job queue on SQLite and PostgreSQL: atomic claims, leases, retries with backoff and jitter, dead
letters, crash recovery."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from dicom_node.core.config import JobsSection
from dicom_node.core.db import Job, JobState, session_scope, utcnow
from dicom_node.core.engine import make_engine
from dicom_node.core.jobs import (
    JobContext,
    JobInterrupted,
    JobRunner,
    LeaseLost,
    PermanentJobError,
    backoff_delay,
    dead_letters,
    enqueue,
    recover_interrupted,
    requeue,
)
from dicom_node.core.owners import Owner, process_owner
from tests.peers import wait_until

FAST = JobsSection(workers=2, max_attempts=3, backoff_base_seconds=0.01, backoff_max_seconds=0.05, poll_seconds=0.02)


@pytest.fixture
def engine(db_url: str) -> Any:
    """An index on each backend (SQLite, then PostgreSQL: see ``db_url`` in tests/conftest.py)."""
    e = make_engine(db_url)
    yield e
    e.dispose()


def add(engine: Engine, kind: str = "work", payload: dict[str, Any] | None = None, **kw: Any) -> int:
    with session_scope(engine) as session:
        return enqueue(session, kind, payload or {}, **kw).id


def job(engine: Engine, job_id: int) -> Job:
    with session_scope(engine) as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def test_dedupe_key_returns_the_existing_job(engine: Engine) -> None:
    first = add(engine, "segment", {"study_id": 1}, dedupe_key="segment:1")
    again = add(engine, "segment", {"study_id": 1}, dedupe_key="segment:1")
    other = add(engine, "segment", {"study_id": 2}, dedupe_key="segment:2")
    assert first == again != other


def test_each_job_is_claimed_exactly_once_by_concurrent_claimers(engine: Engine) -> None:
    ids = [add(engine) for _ in range(40)]
    runner = JobRunner(engine, {"work": lambda ctx, p: None}, FAST)
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all() -> None:
        while (j := runner.claim()) is not None:
            with lock:
                claimed.append(j.id)

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == ids
    assert all(job(engine, i).state == JobState.RUNNING and job(engine, i).attempts == 1 for i in ids)


def test_success_stores_the_result(engine: Engine) -> None:
    job_id = add(engine, payload={"x": 2})
    runner = JobRunner(engine, {"work": lambda ctx, p: {"double": p["x"] * 2}}, FAST)
    assert runner.run_once()
    done = job(engine, job_id)
    assert done.state == JobState.DONE and done.result == {"double": 4} and done.finished_at is not None
    assert not runner.run_once()


def test_failures_retry_with_backoff_then_become_dead_letters(engine: Engine) -> None:
    job_id = add(engine)

    def fail(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise RuntimeError(f"peer down (attempt {ctx.attempt})")

    runner = JobRunner(engine, {"work": fail}, FAST, rng=random.Random(1))
    before = utcnow()
    assert runner.run_once()
    failed = job(engine, job_id)
    assert failed.state == JobState.FAILED and failed.attempts == 1
    assert failed.last_error == "RuntimeError: peer down (attempt 1)"
    assert before <= failed.next_run_at <= utcnow() + timedelta(seconds=FAST.backoff_max_seconds)
    for attempt in (2, 3):
        wait_until(runner.run_once, 5, 0.01, f"attempt {attempt} to be due")
    dead = job(engine, job_id)
    assert dead.state == JobState.DEAD and dead.attempts == 3 and "attempt 3" in (dead.last_error or "")
    with session_scope(engine) as session:
        assert [j.id for j in dead_letters(session)] == [job_id]


def test_permanent_error_is_dead_at_once(engine: Engine) -> None:
    job_id = add(engine)

    def refuse(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise PermanentJobError("peer refuses this SOP class")

    JobRunner(engine, {"work": refuse}, FAST).run_once()
    dead = job(engine, job_id)
    assert dead.state == JobState.DEAD and dead.attempts == 1 and dead.last_error == "peer refuses this SOP class"


def test_backoff_is_full_jitter_capped() -> None:
    rng = random.Random(7)
    for attempts in range(1, 12):
        ceiling = min(60.0, 2.0 * 2**attempts)
        delays = [backoff_delay(attempts, 2.0, 60.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling  # spread over the whole range


def test_requeue_a_dead_letter(engine: Engine) -> None:
    job_id = add(engine)
    with session_scope(engine) as session:
        j = session.get(Job, job_id)
        assert j is not None
        j.state, j.attempts, j.last_error = JobState.DEAD, 3, "gave up"
    with session_scope(engine) as session:
        requeue(session, job_id)
    again = job(engine, job_id)
    assert again.state == JobState.QUEUED and again.attempts == 0 and again.next_run_at <= utcnow()
    with session_scope(engine) as session, pytest.raises(ValueError, match="only DEAD or FAILED"):
        requeue(session, job_id)
    with session_scope(engine) as session, pytest.raises(LookupError):
        requeue(session, 9999)


def test_running_jobs_left_by_a_crash_are_recovered(engine: Engine) -> None:
    fresh, worn = add(engine), add(engine)
    with session_scope(engine) as session:
        for job_id, attempts in ((fresh, 1), (worn, 3)):
            j = session.get(Job, job_id)
            assert j is not None
            j.state, j.attempts = JobState.RUNNING, attempts
    with session_scope(engine) as session:
        assert recover_interrupted(session, max_attempts=3) == 2
    assert job(engine, fresh).state == JobState.QUEUED
    assert job(engine, worn).state == JobState.DEAD


def test_checkpoints_survive_a_retry(engine: Engine) -> None:
    job_id = add(engine, payload={"items": ["a", "b", "c"]})
    seen: list[list[str]] = []

    def partial(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        done = list(ctx.saved.get("done", []))
        seen.append(list(done))
        for item in payload["items"]:
            if item in done:
                continue
            if item == "c" and ctx.attempt == 1:
                raise RuntimeError("connection lost")
            done.append(item)
            ctx.checkpoint({"done": done})
        return {"count": len(done)}

    runner = JobRunner(engine, {"work": partial}, FAST)
    runner.run_once()
    wait_until(runner.run_once, 5, 0.01, "the retry")
    assert seen == [[], ["a", "b"]]
    assert job(engine, job_id).result == {"done": ["a", "b", "c"], "count": 3}


def test_interrupted_jobs_go_back_without_spending_an_attempt(engine: Engine) -> None:
    job_id = add(engine)

    def stop_early(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise JobInterrupted()

    JobRunner(engine, {"work": stop_early}, FAST).run_once()
    again = job(engine, job_id)
    assert again.state == JobState.QUEUED and again.attempts == 0


def test_runner_threads_run_jobs_and_leave_kinds_without_handlers_queued(engine: Engine) -> None:
    runner = JobRunner(engine, {"work": lambda ctx, p: {"ok": True}}, FAST)
    runner.start()
    try:
        ids = [add(engine) for _ in range(5)]
        waiting = add(engine, "segment", {"study_id": 1})
        runner.notify()
        wait_until(lambda: all(job(engine, i).state == JobState.DONE for i in ids), 20, 0.05, "the jobs")
        assert job(engine, waiting).state == JobState.QUEUED
        runner.add_handler("segment", lambda ctx, p: {"segmented": p["study_id"]})
        wait_until(lambda: job(engine, waiting).state == JobState.DONE, 20, 0.05, "the segment job")
    finally:
        runner.stop()


def test_deferred_jobs_wait_without_spending_an_attempt(engine: Engine) -> None:
    from dicom_node.core.jobs import JobDeferred

    job_id = add(engine)

    def busy(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise JobDeferred("the model is being changed by job 7", delay=60)

    JobRunner(engine, {"work": busy}, FAST).run_once()
    again = job(engine, job_id)
    assert again.state == JobState.QUEUED and again.attempts == 0
    assert again.next_run_at > utcnow() + timedelta(seconds=50)
    assert again.last_error == "deferred: the model is being changed by job 7"


def test_a_dead_letter_tells_the_rest_of_the_state(engine: Engine) -> None:
    """A kind's ``on_dead`` runs in the DEAD transaction, also for a job that died with the process."""
    seen: list[tuple[dict[str, Any], str]] = []
    runner = JobRunner(engine, {"work": lambda ctx, p: None}, FAST)
    runner.on_dead("work", lambda session, payload, error: seen.append((payload, error)))

    def broken(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise PermanentJobError("the series cannot be read")

    runner.add_handler("work", broken)
    add(engine, "work", {"study_id": 1})
    runner.run_once()
    assert seen == [({"study_id": 1}, "the series cannot be read")]
    crashed = add(engine, "work", {"study_id": 2}, max_attempts=1)
    with session_scope(engine) as session:  # claimed on its last attempt, then the process died
        row = session.get(Job, crashed)
        assert row is not None
        row.state, row.attempts = JobState.RUNNING, 1
    with session_scope(engine) as session:
        recover_interrupted(session, 3, runner.dead_handlers)
    assert job(engine, crashed).state == JobState.DEAD
    assert seen[1][0] == {"study_id": 2} and "interrupted" in seen[1][1]


# ---------------------------------------------------------------------------------------------- leases
LEASED = JobsSection(workers=1, max_attempts=3, poll_seconds=0.02, lease_seconds=0.6)


def other_owner(name: str) -> Owner:
    """A runner identity of another host (its liveness cannot be told from here)."""
    return Owner(f"other-host-{name}", 4242, "1")


def expire(engine: Engine, job_id: int) -> None:
    """What time does to a lease nobody renews."""
    with session_scope(engine) as session:
        row = session.get(Job, job_id)
        assert row is not None
        row.lease_until = utcnow() - timedelta(seconds=1)


def test_a_claim_records_its_holder_and_lease(engine: Engine) -> None:
    job_id = add(engine)
    runner = JobRunner(engine, {"work": lambda ctx, p: None}, LEASED)
    before = utcnow()
    claimed = runner.claim()
    assert claimed is not None and claimed.id == job_id
    row = job(engine, job_id)
    assert row.claimed_by == str(process_owner()) and Owner.parse(row.claimed_by) == process_owner()
    assert row.lease_until is not None and row.lease_until >= before + timedelta(seconds=LEASED.lease_seconds)
    assert runner.claim() is None  # held: nobody else gets it, not even this runner again


def test_a_runner_that_lost_its_lease_records_nothing(engine: Engine) -> None:
    """A takes the job, stalls past its lease; B takes it over and finishes; A's late outcome is not recorded."""
    job_id = add(engine, payload={"n": 1})
    stalled, resume = threading.Event(), threading.Event()
    checkpoint_error: list[BaseException] = []

    def slow(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        stalled.set()
        assert resume.wait(30)
        try:
            ctx.checkpoint({"late": True})
        except LeaseLost as exc:
            checkpoint_error.append(exc)
        return {"by": "A"}

    a = JobRunner(engine, {"work": slow}, LEASED, owner=other_owner("a"))
    b = JobRunner(engine, {"work": lambda ctx, p: {"by": "B", "attempt": ctx.attempt}}, LEASED, owner=other_owner("b"))
    thread = threading.Thread(target=a.run_once)
    thread.start()
    try:
        assert stalled.wait(30)
        assert b.claim() is None  # A's lease still holds
        expire(engine, job_id)
        assert b.run_once()
        done = job(engine, job_id)
        assert done.state == JobState.DONE and done.claimed_by == str(other_owner("b"))
        assert done.result == {"by": "B", "attempt": 2} and done.attempts == 2
    finally:
        resume.set()
        thread.join(30)
    after = job(engine, job_id)
    assert after.state == JobState.DONE and after.result == {"by": "B", "attempt": 2}
    assert after.claimed_by == str(other_owner("b")) and after.finished_at == done.finished_at
    assert len(checkpoint_error) == 1 and a.heartbeat() == 0


def test_the_heartbeat_keeps_the_lease_while_the_job_runs(engine: Engine) -> None:
    job_id = add(engine)
    release = threading.Event()

    def long_job(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        assert release.wait(60)
        return {"lost": ctx.lease_lost}

    a = JobRunner(engine, {"work": long_job}, LEASED, owner=other_owner("a"))
    b = JobRunner(engine, {"work": lambda ctx, p: {"by": "B"}}, LEASED, owner=other_owner("b"))
    a.start()
    try:
        first = wait_until(lambda: job(engine, job_id).lease_until, 20, 0.02, "the claim")
        claimed_at = job(engine, job_id).started_at
        assert claimed_at is not None
        # several lease lengths later the job is still A's: each heartbeat pushed its lease further
        horizon = claimed_at + timedelta(seconds=4 * LEASED.lease_seconds)
        wait_until(lambda: (job(engine, job_id).lease_until or first) > horizon, 30, 0.05, "heartbeats")
        assert b.claim() is None
        assert job(engine, job_id).claimed_by == str(other_owner("a"))
        release.set()
        wait_until(lambda: job(engine, job_id).state == JobState.DONE, 20, 0.05, "the job to finish")
        finished = job(engine, job_id)
        assert finished.result == {"lost": False} and finished.attempts == 1 and finished.lease_until is None
    finally:
        release.set()
        a.stop()


def test_an_expired_lease_on_the_last_attempt_is_a_dead_letter(engine: Engine) -> None:
    job_id = add(engine, payload={"study_id": 9}, max_attempts=2)
    seen: list[tuple[dict[str, Any], str]] = []
    runner = JobRunner(engine, {"work": lambda ctx, p: None}, LEASED)
    runner.on_dead("work", lambda session, payload, error: seen.append((payload, error)))
    with session_scope(engine) as session:
        row = session.get(Job, job_id)
        assert row is not None
        row.state, row.attempts, row.claimed_by = JobState.RUNNING, 2, str(other_owner("gone"))
        row.started_at, row.lease_until = utcnow(), utcnow() - timedelta(seconds=1)
    assert runner.claim() is None
    dead = job(engine, job_id)
    assert dead.state == JobState.DEAD and "lease expired" in (dead.last_error or "")
    assert seen == [({"study_id": 9}, dead.last_error)]


def test_a_start_releases_the_jobs_of_this_hosts_ended_processes_only(engine: Engine) -> None:
    """Ended processes of this host: queued again at once; live ones and other hosts: left to their leases."""
    me = process_owner()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    claimers = {
        "ended process": str(Owner(me.host, int(ended.stdout), me.start)),
        "pid reused by another process": str(Owner(me.host, me.pid, str(int(me.start) + 1))),
        "unrecorded (Laurel 0.2)": None,
        "this live process": str(me),
        "another host": str(other_owner("x")),
    }
    ids = {}
    for name, claimed_by in claimers.items():
        ids[name] = add(engine)
        with session_scope(engine) as session:
            row = session.get(Job, ids[name])
            assert row is not None
            row.state, row.attempts, row.claimed_by = JobState.RUNNING, 1, claimed_by
            row.started_at, row.lease_until = utcnow(), utcnow() + timedelta(hours=1)
    runner = JobRunner(engine, {}, LEASED)
    runner.start()
    runner.stop()
    states = {name: job(engine, i).state for name, i in ids.items()}
    assert states == {
        "ended process": JobState.QUEUED,
        "pid reused by another process": JobState.QUEUED,
        "unrecorded (Laurel 0.2)": JobState.QUEUED,
        "this live process": JobState.RUNNING,
        "another host": JobState.RUNNING,
    }
