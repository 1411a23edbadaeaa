"""``laurel serve`` as processes: one supervisor, an intake, an API and ``jobs.workers`` workers.

The supervisor holds the storage lock (one node per ``storage_dir``), brings the index to the schema this code
needs, queues again the jobs a crash left running, then starts its children
(``python -m dicom_node.process.child ROLE``) and watches them:

* a child that exits while the node runs is started again (backoff 1, 2, 4 … 30 s when it keeps failing);
  the jobs a dead worker held are queued again at once (``recover_interrupted``: RUNNING jobs of this host's
  ended processes), not after their lease;
* SIGTERM (or SIGINT) is passed to every child; the intake and the API stop in about a second, a worker
  finishes its running job for up to ``jobs.stop_grace_seconds`` and is then killed (the job runs again
  after the restart: every handler is idempotent);
* the children die with the supervisor (``PR_SET_PDEATHSIG``), so a SIGKILL of ``laurel serve`` leaves no
  process behind.

Counters of every child reach the API's ``/metrics`` through Prometheus' multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` = ``storage_dir/.metrics``, emptied at start).

``laurel worker`` runs a supervisor of workers only (no lock, no intake, no API), on a host that shares the
index (PostgreSQL) and ``storage_dir``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dicom_node.core.config import NodeConfig
from dicom_node.core.startup import StorageLock

logger = logging.getLogger(__name__)

METRICS_DIR = ".metrics"
_MAX_BACKOFF = 30.0
_HEALTHY_SECONDS = 60.0


@dataclass
class Child:
    """One supervised process: its role, index and the current ``Popen``."""

    role: str
    index: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``intake``, ``api`` or ``worker<N>``."""
        return f"{self.role}{self.index}" if self.role == "worker" else self.role


class Supervisor:
    """Starts, watches and stops the node's processes (see the module docstring)."""

    def __init__(self, config_path: Path, config: NodeConfig, *, workers_only: bool = False, verbose: bool = False):
        self.config_path = config_path.resolve()
        self.config = config
        self.workers_only = workers_only
        self.verbose = verbose
        roles = [] if workers_only else [Child("intake")] + ([Child("api")] if config.api.enabled else [])
        self.children: list[Child] = roles + [Child("worker", i) for i in range(config.jobs.workers)]
        self._lock: StorageLock | None = None
        self._stopping = threading.Event()
        self._env = dict(os.environ)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Lock the storage, prepare the index, then start every child."""
        cfg = self.config
        if not self.workers_only:
            cfg.node.storage_dir.mkdir(parents=True, exist_ok=True)
            self._lock = StorageLock(cfg.node.storage_dir)
            self._lock.acquire()
        try:
            self._prepare_index()
            self._prepare_metrics()
        except BaseException:
            self._release_lock()
            raise
        for child in self.children:
            self._spawn(child)
        logger.info(
            "node %s: %s started", cfg.node.ae_title, ", ".join(f"{c.name} (pid {c.pid})" for c in self._running())
        )

    def _prepare_index(self) -> None:
        from dicom_node.core.db import relativize_paths, session_scope
        from dicom_node.core.jobs import recover_interrupted
        from dicom_node.work.workflow import dead_handlers

        engine = self.config.node.engine()  # creates or migrates the schema once, before any child opens it
        try:
            if not self.workers_only:
                relativize_paths(engine, self.config.node.storage_dir, self.config.models_dir)
                with session_scope(engine) as session:
                    recover_interrupted(session, self.config.jobs.max_attempts, dead_handlers(self.config))
        finally:
            engine.dispose()

    def _prepare_metrics(self) -> None:
        folder = self.config.node.storage_dir / METRICS_DIR
        if not self.workers_only:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self._env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        self._env.setdefault("TCP_NODELAY", "1")

    def _spawn(self, child: Child) -> None:
        command = [
            sys.executable,
            "-m",
            "dicom_node.process.child",
            child.role,
            "--config",
            str(self.config_path),
            "--index",
            str(child.index),
        ]
        if self.verbose:
            command.append("--verbose")
        child.process = subprocess.Popen(command, env=self._env, close_fds=True)
        child.started_at = time.monotonic()
        child.restart_at = None

    # ------------------------------------------------------------------ watch
    def _running(self) -> list[_Running]:
        return [_Running(c.name, c.process.pid) for c in self.children if c.process is not None]

    def run(self, stop: threading.Event) -> None:
        """Watch the children until ``stop`` is set, then stop them."""
        try:
            while not stop.wait(0.25):
                self.check_children()
        finally:
            self.stop()

    def check_children(self) -> None:
        """Start again the children that exited (after their backoff); release a dead worker's jobs."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                code = process.returncode
                child.history.append(code)
                self._mark_dead(process.pid)
                if child.role == "worker":
                    self._release_jobs_of_ended_workers()
                if now - child.started_at > _HEALTHY_SECONDS:
                    child.failures = 0
                delay = min(_MAX_BACKOFF, 2.0**child.failures)
                child.failures += 1
                child.process = None
                child.restart_at = now + delay
                logger.error(
                    "%s (pid %d) exited with %s; starting it again in %.0f s", child.name, process.pid, code, delay
                )
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
                assert child.process is not None
                logger.info("%s started again (pid %d)", child.name, child.process.pid)

    def _release_jobs_of_ended_workers(self) -> None:
        """Queue again, at once, the jobs a dead worker held (not waiting for their lease to expire)."""
        from dicom_node.core.db import session_scope
        from dicom_node.core.jobs import recover_interrupted
        from dicom_node.work.workflow import dead_handlers

        engine = self.config.node.engine()
        try:
            with session_scope(engine) as session:
                recover_interrupted(session, self.config.jobs.max_attempts, dead_handlers(self.config))
        except Exception:
            logger.exception("could not release the dead worker's jobs; their lease expires instead")
        finally:
            engine.dispose()

    def _mark_dead(self, pid: int) -> None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self._env["PROMETHEUS_MULTIPROC_DIR"])
        except Exception:  # pragma: no cover - metrics are best effort
            logger.debug("could not mark the metrics of pid %d dead", pid, exc_info=True)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """SIGTERM every child, wait (workers up to ``jobs.stop_grace_seconds``), SIGKILL what is left."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        live = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in live:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.jobs.stop_grace_seconds + 2.0
        for child in live:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killed (its job runs again at the next start)", child.name)
                child.process.kill()
                child.process.wait()
        self._release_lock()
        logger.info("node %s stopped", self.config.node.ae_title)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


@dataclass(frozen=True)
class _Running:
    name: str
    pid: int
