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
  process behind;
* SIGHUP (``laurel reload``, the API after a save, or ``kill -HUP``) reloads the configuration file
  (:mod:`dicom_node.process.reload`): a file that does not validate is refused (the field and the reason
  logged and answered, the configuration in force stays); otherwise SIGHUP goes on to every child, which
  applies the reloadable sections (peers, routing, retention, …), and a change of ``node.ae_title``,
  ``host`` or ``port`` restarts the intake only (SIGUSR1: it stops listening, lets its open associations
  finish for up to ``jobs.stop_grace_seconds``, and exits; the new intake listens as configured). The
  change is audited with who asked for it.

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
from typing import Any

from dicom_node.core.config import NodeConfig
from dicom_node.core.startup import StorageLock
from dicom_node.process import reload as protocol

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
    #: Stopped on purpose (a new listener): started again at once, not counted as a failure.
    planned_restart: bool = False

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
        self._generation = 0
        self._pending: _PendingReload | None = None

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
            protocol.reset(cfg.node.storage_dir)
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

    def run(self, stop: threading.Event, signals: protocol.ReloadSignals | None = None) -> None:
        """Watch the children until ``stop`` is set, then stop them; reload at each SIGHUP of ``signals``."""
        try:
            while not stop.is_set():
                sender = signals.wait(0.25) if signals is not None else None
                if sender is None and signals is None:
                    stop.wait(0.25)
                if stop.is_set():
                    break
                if sender is not None:
                    self.reload(sender)
                self.check_children()
                self._check_reload()
        finally:
            self.stop()

    # ------------------------------------------------------------------ reload
    def reload(self, sender: str) -> None:
        """Apply the configuration file (see the module docstring); ``sender``: who sent a plain SIGHUP."""
        from dicom_node.core.config_changes import (
            CHANGE_ACTION,
            REFUSED_ACTION,
            ConfigChangeError,
            diff_configs,
            load_config_file,
            merge_reloadable,
        )

        storage = self.config.node.storage_dir
        requests = protocol.take_requests(storage)
        actor = protocol.actor_of(requests, sender)
        try:
            new = load_config_file(self.config_path)
        except ConfigChangeError as exc:
            logger.error("configuration reload asked by %s refused, the configuration in force stays: %s", actor, exc)
            self._audit(actor, REFUSED_ACTION, {"source": "reload", **exc.as_dict()})
            protocol.answer(storage, requests, {"outcome": "refused", **exc.as_dict()})
            return
        diff = diff_configs(self.config, new)
        if diff.needs_restart:
            logger.warning("not applied until laurel serve restarts: %s", ", ".join(diff.needs_restart))
        if not diff.changed:
            logger.info("configuration reload asked by %s: nothing to apply", actor)
            protocol.answer(storage, requests, {"outcome": "unchanged", **diff.as_dict()})
            return
        self.config = merge_reloadable(self.config, new, listener=bool(diff.listener))
        self._generation += 1
        protocol.publish_generation(storage, self._generation)
        expected: list[Child] = []
        for child in self.children:
            if child.process is None or child.process.poll() is not None:
                continue  # started again later: it reads the new file then
            if child.role == "intake" and diff.listener:
                child.planned_restart = True
                child.process.send_signal(signal.SIGUSR1)
            else:
                child.process.send_signal(signal.SIGHUP)
            expected.append(child)
        if not requests or not all(r.audited for r in requests):
            self._audit(actor, CHANGE_ACTION, {"source": "reload", **diff.as_dict()})
        logger.info(
            "configuration reloaded (asked by %s): %s%s",
            actor,
            ", ".join(diff.sections) or "no section",
            "; the intake restarts for a new listener" if diff.listener else "",
        )
        earlier = self._pending.requests if self._pending is not None else []
        grace = self.config.jobs.stop_grace_seconds + 60.0 if diff.listener else 30.0
        self._pending = _PendingReload(
            self._generation, earlier + requests, [c.name for c in expected], time.monotonic() + grace, diff.as_dict()
        )

    def _check_reload(self) -> None:
        """Answer the requests of a reload once every child applied it (or its time is up)."""
        pending = self._pending
        if pending is None:
            return
        storage = self.config.node.storage_dir
        waiting = [n for n in pending.children if protocol.acknowledged(storage, n) < pending.generation]
        if waiting and time.monotonic() < pending.deadline:
            return
        if waiting:
            logger.warning("reload %d: %s did not confirm it in time", pending.generation, ", ".join(waiting))
        applied = [n for n in pending.children if n not in waiting]
        result = {"outcome": "applied", "generation": pending.generation, "applied_by": applied, **pending.diff}
        if waiting:
            result["not_confirmed"] = waiting
        protocol.answer(storage, pending.requests, result)
        self._pending = None

    def _audit(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        from dicom_node.core.config_changes import audit_config_event

        engine = self.config.node.engine(create=False)
        try:
            audit_config_event(engine, actor, action, detail)
        except Exception:
            logger.exception("could not write the audit event of the configuration reload")
        finally:
            engine.dispose()

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
                child.process = None
                if child.planned_restart:
                    child.planned_restart = False
                    child.restart_at = now
                    logger.info("%s (pid %d) stopped for a new listener; starting it again", child.name, process.pid)
                else:
                    if now - child.started_at > _HEALTHY_SECONDS:
                        child.failures = 0
                    delay = min(_MAX_BACKOFF, 2.0**child.failures)
                    child.failures += 1
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
class _PendingReload:
    """A reload passed on to the children, waiting for their acknowledgements."""

    generation: int
    requests: list[protocol.ReloadRequest]
    children: list[str]
    deadline: float
    diff: dict[str, Any]


@dataclass(frozen=True)
class _Running:
    name: str
    pid: int
