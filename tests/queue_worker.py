"""A job worker process for the queue tests: a :class:`JobRunner` on a shared index, nothing else.

``python -m tests.queue_worker --url URL [--lease S] [--threads N] [--hold]`` runs the ``effect`` job kind
until SIGTERM. Each run is recorded in ``queue_test_run`` (job, pid, attempt); the side effect is a row in
``queue_test_effect`` whose primary key is the job id, so a job done twice cannot go unnoticed. With
``--hold`` the handler records its run and then holds the job until the process stops (to be killed).
The first job of each process waits until another process has run a job too (both take part).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

logger = logging.getLogger("tests.queue_worker")

metadata = MetaData()
ready_table = Table(
    "queue_test_ready", metadata, Column("pid", Integer, primary_key=True), Column("owner", String(255))
)
run_table = Table(
    "queue_test_run",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
)
effect_table = Table("queue_test_effect", metadata, Column("job_id", Integer, primary_key=True))

EFFECT_JOB = "effect"


def main() -> None:
    """Run the worker until SIGTERM."""
    from dicom_node.core.config import JobsSection
    from dicom_node.core.engine import make_engine
    from dicom_node.core.jobs import JobContext, JobRunner
    from dicom_node.core.owners import process_owner

    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--rendezvous", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(threadName)s %(name)s %(message)s")
    engine = make_engine(args.url)
    stop = threading.Event()
    pid = os.getpid()
    met = threading.Event()

    def effect(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        with engine.begin() as conn:
            conn.execute(insert(run_table).values(job_id=ctx.job_id, pid=pid, attempt=ctx.attempt))
        if args.rendezvous and not met.is_set():
            deadline = time.monotonic() + 60
            while not met.is_set() and time.monotonic() < deadline:
                with engine.connect() as conn:
                    if conn.scalar(select(func.count(func.distinct(run_table.c.pid)))) >= 2:
                        met.set()
                        break
                met.wait(0.02)  # poll the other process's first row until the deadline
        if args.hold:
            ctx.stop_event.wait()  # held until the runner stops (or the process is killed)
        with engine.begin() as conn:
            conn.execute(insert(effect_table).values(job_id=ctx.job_id))
        return {"pid": pid}

    runner = JobRunner(
        engine,
        {EFFECT_JOB: effect},
        JobsSection(
            workers=args.threads,
            max_attempts=3,
            poll_seconds=0.02,
            backoff_base_seconds=0.05,
            backoff_max_seconds=0.2,
            lease_seconds=args.lease,
        ),
    )
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner.start()
    with engine.begin() as conn:
        conn.execute(insert(ready_table).values(pid=pid, owner=str(process_owner())))
    logger.info("worker %s ready", process_owner())
    stop.wait()
    runner.stop()
    engine.dispose()


if __name__ == "__main__":
    main()
