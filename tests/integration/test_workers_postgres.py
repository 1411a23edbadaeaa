"""Workers on one PostgreSQL queue, as a site with a second (GPU) host runs them: ``laurel serve`` on one
"host" and ``laurel worker`` on another, sharing the index and ``storage_dir``. Every job runs once; a worker
killed mid-segment has its job taken over by the other after the lease, and the study still gets its draft.

Real processes and a real PostgreSQL server (``postgres_url``: a new database on the session's server).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from dicom_node.core.db import Job, JobState, Study, session_scope
from dicom_node.core.review_tables import SeriesResult
from tests.peers import PEER_ENV, REPO, ManagedProcess, NodeProcess, node_settings, store_raw, wait_until
from tests.workflow_fixtures import phantom_series

pytestmark = [pytest.mark.peers, pytest.mark.slow]


class WorkerProcess(ManagedProcess):
    """``laurel worker`` with the node's configuration file (another host's workers)."""

    def __init__(self, workdir: Path, config_path: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, "worker")
        self.config_path = config_path
        self.extra_env = dict(env or {})

    def start(self) -> WorkerProcess:
        env = {**PEER_ENV, "PYTHONPATH": str(REPO), **self.extra_env}
        self._spawn([sys.executable, "-m", "dicom_node", "worker", "--config", str(self.config_path)], env)
        wait_until(lambda: "claiming jobs" in self.log(), 180, 0.2, f"the worker (log: {self.log_path})")
        return self


def _settings(tmp_path: Path, postgres_url: str, **jobs: Any) -> dict[str, Any]:
    settings = node_settings(
        tmp_path,
        routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],
        jobs={"workers": 1, "poll_seconds": 0.05, "backoff_base_seconds": 0.1, "backoff_max_seconds": 0.5, **jobs},
    )
    settings["node"]["database_url"] = postgres_url
    return settings


def _send_phantoms(node: NodeProcess, folder: Path, seeds: list[int]) -> list[str]:
    uids = []
    for seed in seeds:
        files, _phantom = phantom_series(folder / str(seed), seed, n_slices=6, matrix=128)  # SYNTHETIC leg
        assert store_raw(node.port, files) == [0] * len(files)
        uids.append(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID))
    return uids


def _states(engine: Any) -> dict[str, str]:
    with session_scope(engine) as session:
        return {s.StudyInstanceUID: s.state for s in session.scalars(select(Study))}


def _segment_jobs(engine: Any) -> list[tuple[str, int]]:
    with session_scope(engine) as session:
        return [(j.state, j.attempts) for j in session.scalars(select(Job).where(Job.kind == "segment"))]


def _drafts(engine: Any) -> int:
    with session_scope(engine) as session:
        return len(list(session.scalars(select(SeriesResult).where(SeriesResult.draft_seg_path.is_not(None)))))


def test_serve_and_a_worker_host_share_one_queue_and_do_each_job_once(tmp_path: Path, postgres_url: str) -> None:
    settings = _settings(tmp_path, postgres_url)
    node = NodeProcess(tmp_path / "intake-host", settings).start(timeout=180)
    worker = WorkerProcess(tmp_path / "gpu-host", node.config_path).start()
    try:
        uids = _send_phantoms(node, tmp_path / "studies", [11, 12, 13, 14])
        engine = node.engine()
        wait_until(lambda: all(_states(engine).get(uid) == "PENDING_REVIEW" for uid in uids), 900, 0.5, "four drafts")
        assert sorted(_segment_jobs(engine)) == [(JobState.DONE, 1)] * 4  # each job claimed and done once
        assert _drafts(engine) == 4
        engine.dispose()
    finally:
        worker.stop(timeout=30)
        node.stop(timeout=30)


def test_a_worker_killed_mid_segment_is_taken_over_after_its_lease(tmp_path: Path, postgres_url: str) -> None:
    settings = _settings(tmp_path, postgres_url, lease_seconds=3)
    faults = tmp_path / "faults"
    held = {"LAUREL_FAULT_HOLD": "segment.after_drafts", "LAUREL_FAULT_DIR": str(faults)}
    node = NodeProcess(tmp_path / "intake-host", settings, env=held).start(timeout=180)
    worker: WorkerProcess | None = None
    try:
        [uid] = _send_phantoms(node, tmp_path / "studies", [21])
        wait_until(lambda: (faults / "segment.after_drafts.reached").exists(), 600, 0.2, "the held segment job")
        # the other host's worker starts while the first holds the job: it must not take a job that is held
        worker = WorkerProcess(tmp_path / "gpu-host", node.config_path).start()
        engine = node.engine()
        assert _segment_jobs(engine) == [(JobState.RUNNING, 1)]
        node.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # the whole first host dies
        node.proc.wait(30)  # type: ignore[union-attr]
        wait_until(lambda: _states(engine).get(uid) == "PENDING_REVIEW", 600, 0.5, "the draft from the other host")
        assert _segment_jobs(engine) == [(JobState.DONE, 2)]  # taken over once, after the lease
        assert _drafts(engine) == 1
        assert "taken over" in worker.log() or "lease" in worker.log()
        engine.dispose()
    finally:
        if worker is not None:
            worker.stop(timeout=30)
        node.stop(timeout=30)
