"""Worker processes sharing one PostgreSQL queue: every job done exactly once, a killed worker's job taken over
after its lease (real processes, a real server; see tests/queue_worker.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from dicom_node.core.db import Job, JobState, session_scope
from dicom_node.core.engine import make_engine
from dicom_node.core.jobs import enqueue
from tests.peers import PEER_ENV, REPO, ManagedProcess, wait_until
from tests.queue_worker import EFFECT_JOB, effect_table, metadata, ready_table, run_table

pytestmark = pytest.mark.peers


class WorkerProcess(ManagedProcess):
    """``python -m tests.queue_worker`` on the test's queue."""

    def __init__(self, workdir: Path, url: str, *args: str) -> None:
        super().__init__(workdir, "worker")
        self.url = url
        self.args = args
        #: The ``claimed_by`` of this worker's claims (known once it runs).
        self.owner = ""

    def start(self, engine: Engine, timeout: float = 120) -> WorkerProcess:
        """Start the worker and wait until its runner runs."""
        env = {**PEER_ENV, "PYTHONPATH": str(REPO)}
        self._spawn([sys.executable, "-m", "tests.queue_worker", "--url", self.url, *self.args], env)

        def ready() -> bool:
            assert self.alive, f"the worker exited: {self.log()[-2000:]}"
            with engine.connect() as conn:
                owner = conn.scalar(select(ready_table.c.owner).where(ready_table.c.pid == self.pid))
            self.owner = str(owner)
            return owner is not None

        wait_until(ready, timeout, 0.1, f"worker {self.workdir.name} (log: {self.log_path})")
        return self


@pytest.fixture
def queue(postgres_url: str) -> Iterator[Engine]:
    """A migrated PostgreSQL index with the test's bookkeeping tables."""
    engine = make_engine(postgres_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def workers(tmp_path: Path, postgres_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Make worker processes (not started); all are stopped by PID afterwards."""
    made: list[WorkerProcess] = []

    def make(*args: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path / f"worker{len(made)}", postgres_url, *args)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()


def enqueue_many(engine: Engine, n: int) -> list[int]:
    with session_scope(engine) as session:
        return [enqueue(session, EFFECT_JOB, {"n": i}).id for i in range(n)]


def jobs(engine: Engine, ids: list[int]) -> list[Job]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))


def test_two_worker_processes_do_every_job_exactly_once(queue: Engine, workers: Callable[..., WorkerProcess]) -> None:
    first = workers("--threads", "2", "--rendezvous").start(queue)
    second = workers("--threads", "2", "--rendezvous").start(queue)
    ids = enqueue_many(queue, 200)

    def all_done() -> bool:
        states = {j.state for j in jobs(queue, ids)}
        assert JobState.DEAD not in states and JobState.FAILED not in states, states
        return states == {JobState.DONE}

    wait_until(all_done, 240, 0.2, "200 jobs done by two workers")
    with queue.connect() as conn:
        effects = sorted(conn.scalars(select(effect_table.c.job_id)))
        runs = conn.execute(select(run_table.c.job_id, run_table.c.pid)).all()
    assert effects == ids  # the side effect of each job once (a second would have broken the primary key)
    assert sorted(job_id for job_id, _pid in runs) == ids  # and each handler ran once: no job claimed twice
    assert {pid for _job, pid in runs} == {first.pid, second.pid}
    done = jobs(queue, ids)
    assert {j.claimed_by for j in done} == {first.owner, second.owner}
    assert all(j.attempts == 1 and j.lease_until is None for j in done)


def test_a_killed_workers_job_is_taken_over_after_its_lease_and_done_once(
    queue: Engine, workers: Callable[..., WorkerProcess]
) -> None:
    lease = "1.5"
    holder = workers("--threads", "1", "--lease", lease, "--hold").start(queue)
    (job_id,) = enqueue_many(queue, 1)

    def held() -> Any:
        (j,) = jobs(queue, [job_id])
        return j if j.state == JobState.RUNNING and j.claimed_by == holder.owner else None

    claimed = wait_until(held, 60, 0.05, "the holder to claim the job")
    rescuer = workers("--threads", "1", "--lease", lease).start(queue)  # holder alive: its start leaves the job
    # While the holder lives its heartbeat keeps the lease, several lease lengths past the claim.
    horizon = claimed.started_at + timedelta(seconds=4 * float(lease))
    wait_until(lambda: jobs(queue, [job_id])[0].lease_until > horizon, 60, 0.1, "the holder's heartbeats")
    (still,) = jobs(queue, [job_id])
    assert still.state == JobState.RUNNING and still.claimed_by == holder.owner and still.attempts == 1

    holder_pid = holder.pid
    holder.kill()  # SIGKILL while holding the job
    wait_until(lambda: jobs(queue, [job_id])[0].state == JobState.DONE, 60, 0.1, "the rescuer to finish the job")
    (done,) = jobs(queue, [job_id])
    assert done.claimed_by == rescuer.owner and done.attempts == 2 and done.result == {"pid": rescuer.pid}
    with queue.connect() as conn:
        runs = conn.execute(select(run_table.c.pid, run_table.c.attempt).order_by(run_table.c.id)).all()
        effects = conn.scalar(select(func.count()).select_from(effect_table))
    assert [tuple(r) for r in runs] == [(holder_pid, 1), (rescuer.pid, 2)]
    assert effects == 1
