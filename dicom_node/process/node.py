"""The node: one process assembling the index, storage, SCP, scheduler, job workers and (optionally) the API.

Extension points for the code built on top (pipeline, review, learning, API):

* :meth:`Node.add_job_handler` registers the handler of a job kind (e.g. ``segment``); jobs of a kind
  without a handler wait in the queue.
* :meth:`Node.add_periodic` runs a function on the scheduler (e.g. a federation sync that enqueues a job).
* ``Node(config, api_app_factory=f)``: ``f(node)`` returns the ASGI app served by uvicorn on
  ``api.host:api.port`` when ``api.enabled`` (available as ``node.api_app``); without a factory the node
  serves DICOM only.
* :func:`dicom_node.cli.node_commands.build_node` is where ``laurel serve`` assembles a node: the one place to
  plug the workflow (segment/learn handlers, API factory) into the command.
* :meth:`Node.session` opens a database session; state changes go through ``dicom_node.core.db.set_study_state``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import relativize_paths, session_scope
from dicom_node.core.jobs import Handler, JobRunner, enqueue
from dicom_node.core.metrics import NodeMetrics
from dicom_node.core.startup import StorageLock
from dicom_node.intake.completion import complete_settled_studies, queue_late_arrivals
from dicom_node.intake.routing import Router
from dicom_node.intake.scp import StoreSCP
from dicom_node.intake.store import Store
from dicom_node.work.export import EXPORT_JOB, export_handler
from dicom_node.work.retention import RETENTION_JOB, retention_handler

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
            self.engine = config.node.engine()
        except BaseException:
            self._storage_lock.release()
            raise
        self.router = Router(config.routing)
        self.store = Store(config.node.storage_dir, self.engine, self.router, self.metrics)
        self.scp = StoreSCP(config, self.store, self.metrics)
        self.jobs = JobRunner(self.engine, {}, config.jobs, metrics=self.metrics)
        self.jobs.add_handler(EXPORT_JOB, export_handler(config, self.metrics))
        self.jobs.add_handler(RETENTION_JOB, retention_handler(config, self.metrics))
        self.api_app_factory = api_app_factory
        self.api_app: Any = None
        self._api_server: Any = None
        self._api_thread: threading.Thread | None = None
        self._periodic: list[tuple[str, Callable[[], None], float]] = []
        self._on_start: list[tuple[str, Callable[[], None]]] = []
        self._scheduler: Any = None
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

    def add_periodic(self, name: str, fn: Callable[[], None], seconds: float) -> None:
        """Run ``fn`` every ``seconds`` on the scheduler (one run at a time; errors are logged)."""
        self._periodic.append((name, fn, seconds))
        if self._scheduler is not None:
            self._schedule(name, fn, seconds)

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
        from apscheduler.schedulers.background import BackgroundScheduler

        self.store.open()
        relativize_paths(self.engine, self.config.node.storage_dir, self.config.models_dir)
        self.jobs.start()
        scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._scheduler = scheduler
        self._schedule("completion", self._complete_studies, self.config.node.completion_scan_seconds)
        self._schedule("retention", self._queue_retention, self.config.retention.scan_interval_seconds)
        self._schedule("metrics", self._refresh_metrics, 5.0)
        for name, fn, seconds in self._periodic:
            self._schedule(name, fn, seconds)
        scheduler.start()
        self.scp.start()
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
        self.scp.stop()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.jobs.stop()
        self.store.close()
        self.engine.dispose()
        self.store.mark_clean_shutdown()
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

    # ------------------------------------------------------------------ periodic work
    def _schedule(self, name: str, fn: Callable[[], None], seconds: float) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                logger.exception("periodic task %s failed", name)

        self._scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name, replace_existing=True)

    def _complete_studies(self) -> None:
        completed = complete_settled_studies(self.engine, self.config.node.settle_seconds, metrics=self.metrics)
        if completed:
            logger.info("studies complete: %s", ", ".join(str(i) for i in completed))
            self.jobs.notify()
        if queue_late_arrivals(self.engine, self.config.node.settle_seconds):
            self.jobs.notify()

    def _queue_retention(self) -> None:
        bucket = int(time.time() // self.config.retention.scan_interval_seconds)
        self.enqueue(RETENTION_JOB, {}, dedupe_key=f"{RETENTION_JOB}:{bucket}")

    def _refresh_metrics(self) -> None:
        with self.session() as session:
            self.metrics.refresh(session)

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


def build_node(cfg: NodeConfig) -> Node:
    """The whole node ``laurel serve`` runs: spine + workflow + API."""
    from dicom_node.api.app import create_app
    from dicom_node.work.services import NodeServices
    from dicom_node.work.workflow import attach, build_services, federation_client

    holder: dict[str, NodeServices] = {}
    node = Node(cfg, api_app_factory=lambda _node: create_app(holder["services"]))
    services = build_services(node, federation_client(cfg))
    holder["services"] = services
    attach(node, services)
    node.services = services  # type: ignore[attr-defined]
    return node
