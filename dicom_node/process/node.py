"""The embedded node: intake, job workers and (optionally) the API in one process.

``laurel serve`` runs the same parts as separate processes (:mod:`dicom_node.process.supervisor`); this
one-process assembly is what the demo, the benchmarks and most tests start, because it starts in a second
and shares one interpreter. It is the same code: :class:`~dicom_node.intake.service.IntakeService` for the
SCP, store and scheduler, a :class:`~dicom_node.core.jobs.JobRunner` with the workflow's handlers
(:func:`dicom_node.work.workflow.attach`) for the jobs (``jobs.workers`` threads), and the API app.

Reload in place: :meth:`Node.reload` applies a new configuration's reloadable sections (peers, routing,
retention, …) to the running parts (associations open at that moment finish under their policy) and, for a
new AE title, host or port, restarts the listener only (open associations finish first, up to
``jobs.stop_grace_seconds``); :meth:`Node.reload_file` does it from the configuration file and answers
``laurel reload`` (:mod:`dicom_node.process.reload`).

Extension points: :meth:`Node.add_job_handler` (a handler of a job kind), :meth:`Node.add_on_start` (run once
in a background thread after start, e.g. warming the models), ``Node(config, api_app_factory=f)`` (``f(node)``
returns the ASGI app served by uvicorn on ``api.host:api.port`` when ``api.enabled``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import relativize_paths, session_scope
from dicom_node.core.jobs import Handler, JobRunner, enqueue
from dicom_node.core.metrics import NodeMetrics
from dicom_node.core.startup import StorageLock
from dicom_node.intake.service import IntakeService
from dicom_node.work.export import EXPORT_JOB, export_handler
from dicom_node.work.retention import RETENTION_JOB, retention_handler

if TYPE_CHECKING:
    from dicom_node.core.config_changes import ConfigDiff

logger = logging.getLogger(__name__)

ApiAppFactory = Callable[["Node"], Any]


class Node:
    """The Laurel node (see the module docstring): ``start()``, ``stop()``, ``wait()``; a context manager."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        api_app_factory: ApiAppFactory | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or NodeMetrics()
        config.node.storage_dir.mkdir(parents=True, exist_ok=True)
        self._storage_lock = StorageLock(config.node.storage_dir)
        self._storage_lock.acquire()  # one node per storage folder; released by stop() or by the kernel
        try:
            self.intake = IntakeService(
                config, self.metrics, on_jobs_queued=lambda: self.jobs.notify(), refresh_metrics=True
            )
        except BaseException:
            self._storage_lock.release()
            raise
        self.engine = self.intake.engine
        self.jobs = JobRunner(self.engine, {}, config.jobs, metrics=self.metrics)
        self.router = self.intake.router
        self.store = self.intake.store
        self.scp = self.intake.scp
        # The configuration is read at each job: a reload applies to the jobs already queued.
        self.jobs.add_handler(EXPORT_JOB, lambda ctx, p: export_handler(self.config, self.metrics)(ctx, p))
        self.jobs.add_handler(RETENTION_JOB, lambda ctx, p: retention_handler(self.config, self.metrics)(ctx, p))
        #: The YAML file the node was started from, when there is one (:meth:`reload_file`).
        self.config_path: Path | None = None
        self._reload_lock = threading.Lock()
        self.api_app_factory = api_app_factory
        self.api_app: Any = None
        self._api_server: Any = None
        self._api_thread: threading.Thread | None = None
        self._on_start: list[tuple[str, Callable[[], None]]] = []
        self._started = False
        self._stopped = threading.Event()
        for chatty in ("pynetdicom", "apscheduler"):
            # pynetdicom logs every request and APScheduler every run at INFO; the node logs what matters.
            library_logger = logging.getLogger(chatty)
            if library_logger.level == logging.NOTSET:
                library_logger.setLevel(logging.WARNING)

    # ------------------------------------------------------------------ extension points
    def add_job_handler(self, kind: str, handler: Handler) -> None:
        """Register the handler of job kind ``kind`` (before or after start)."""
        self.jobs.add_handler(kind, handler)

    def add_on_start(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` once in a background thread when the node has started (e.g. warming the models)."""
        self._on_start.append((name, fn))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session, committed on success."""
        with session_scope(self.engine) as session:
            yield session

    def enqueue(self, kind: str, payload: dict[str, Any], *, dedupe_key: str | None = None) -> int:
        """Queue a job now and wake the workers; returns its id."""
        with self.session() as session:
            job = enqueue(session, kind, payload, dedupe_key=dedupe_key)
            job_id = job.id
        self.jobs.notify()
        return job_id

    @property
    def port(self) -> int:
        """The SCP's TCP port."""
        return self.scp.port

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open storage, then serve DICOM, run the scheduler and the job workers, and the API if enabled."""
        self.intake.open()
        relativize_paths(self.engine, self.config.node.storage_dir, self.config.models_dir)
        self.jobs.start()
        self.intake.serve()
        if self.config.api.enabled:
            self._start_api()
        self._started = True
        for name, fn in self._on_start:
            threading.Thread(target=self._run_once, args=(name, fn), name=f"laurel-{name}", daemon=True).start()
        logger.info("node %s started", self.config.node.ae_title)

    @staticmethod
    def _run_once(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            logger.exception("start-up task %s failed", name)

    def stop(self) -> None:
        """Stop everything in the reverse order; safe to call twice."""
        if self._stopped.is_set():
            return
        if self._api_server is not None:
            self._api_server.should_exit = True
            if self._api_thread is not None:
                self._api_thread.join(timeout=10)
        self.jobs.stop()
        self.intake.stop()
        self._storage_lock.release()
        self._stopped.set()
        logger.info("node %s stopped", self.config.node.ae_title)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has run (``False`` on timeout)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reload
    def reload(self, new: NodeConfig) -> ConfigDiff:
        """Apply ``new``'s reloadable sections, and its listener (AE title, host, port) with a new listener."""
        from dicom_node.core.config_changes import diff_configs, merge_reloadable

        with self._reload_lock:
            diff = diff_configs(self.config, new)
            if not diff.changed:
                return diff
            merged = merge_reloadable(self.config, new, listener=bool(diff.listener))
            self.config = merged
            services = getattr(self, "services", None)
            if services is not None:
                services.config = merged
            if diff.listener and self._started:
                self.intake.restart_listener(merged, grace=merged.jobs.stop_grace_seconds)
            else:
                self.intake.reload(merged)
            logger.info("configuration reloaded: %s", ", ".join([*diff.sections, *diff.listener]))
            return diff

    def reload_file(self, actor: str, *, audited: bool = False) -> dict[str, Any]:
        """Reload from :attr:`config_path` on behalf of ``actor`` (audited unless ``audited``): the outcome as
        ``laurel reload`` prints it; a file that does not validate is refused and changes nothing."""
        from dicom_node.core.config_changes import (
            CHANGE_ACTION,
            REFUSED_ACTION,
            ConfigChangeError,
            audit_config_event,
            load_config_file,
        )

        if self.config_path is None:
            return {"outcome": "refused", "field": "(file)", "reason": "the node was started without a file"}
        try:
            new = load_config_file(self.config_path)
        except ConfigChangeError as exc:
            logger.error("configuration reload asked by %s refused, the configuration in force stays: %s", actor, exc)
            audit_config_event(self.engine, actor, REFUSED_ACTION, {"source": "reload", **exc.as_dict()})
            return {"outcome": "refused", **exc.as_dict()}
        diff = self.reload(new)
        if not diff.changed:
            return {"outcome": "unchanged", **diff.as_dict()}
        if not audited:
            audit_config_event(self.engine, actor, CHANGE_ACTION, {"source": "reload", **diff.as_dict()})
        return {"outcome": "applied", "applied_by": ["node"], **diff.as_dict()}

    # ------------------------------------------------------------------ API
    def _start_api(self) -> None:
        factory = self.api_app_factory
        if factory is None:
            logger.warning("api.enabled but no API app factory was given to the node; serving DICOM only")
            return
        import uvicorn

        self.api_app = factory(self)
        config = uvicorn.Config(
            self.api_app,
            host=self.config.api.host,
            port=self.config.api.port,
            log_level="warning",
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._api_server = server
        self._api_thread = threading.Thread(target=server.run, name="laurel-api", daemon=True)
        self._api_thread.start()
        deadline = time.monotonic() + 15
        while not server.started and self._api_thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            raise RuntimeError(f"the API did not start on {self.config.api.host}:{self.config.api.port}")
        logger.info("API on http://%s:%d", self.config.api.host, self.config.api.port)


def build_node(cfg: NodeConfig, config_path: Path | None = None) -> Node:
    """The whole node in one process: intake + workflow jobs + API (what the demo and the tests start).

    With ``config_path`` (the file ``cfg`` was read from) the API can save the configuration and reload it.
    """
    from dicom_node.api.app import create_app
    from dicom_node.work.workflow import attach, build_services, federation_client, warm_models
    from models.network import preload

    preload()  # TensorFlow's import is not thread-safe: the warm-up thread and the job threads would race
    node = Node(cfg, api_app_factory=lambda n: create_app(n.services))  # type: ignore[attr-defined]
    services = build_services(cfg, node.engine, node.metrics, federation_client(cfg))
    node.services = services  # type: ignore[attr-defined]
    if config_path is not None:
        node.config_path = services.config_path = Path(config_path)
        services.request_reload = lambda actor: node.reload_file(actor, audited=True)
    attach(node.jobs, services)
    node.add_on_start("warm-models", lambda: warm_models(services))
    return node
