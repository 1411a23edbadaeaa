"""A worker process's work in one object: a job runner with every workflow handler, and the models warmed.

``laurel serve`` runs ``jobs.workers`` of these as child processes at a lower CPU priority (``jobs.worker_nice``)
than the intake; ``laurel worker`` runs them alone, on another host that shares the index and storage.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import Series, Study, session_scope, utcnow
from dicom_node.core.jobs import Handler, JobContext, JobInterrupted, JobRunner
from dicom_node.core.metrics import NodeMetrics
from dicom_node.work.workflow import attach, build_services, federation_client, warm_models

if TYPE_CHECKING:
    from dicom_node.work.services import NodeServices

logger = logging.getLogger(__name__)

#: Job kinds that load a model (and so TensorFlow); the others (export, retention) run from the first second.
MODEL_KINDS = ("segment", "resegment", "learn", "upload", "sync")


class WorkerService:
    """Claims and runs jobs of every kind (see :mod:`dicom_node.work.workflow`) with ``threads`` threads."""

    def __init__(self, config: NodeConfig, metrics: NodeMetrics, *, threads: int = 1) -> None:
        self.config = config
        self.metrics = metrics
        self.engine = config.node.engine()
        self.services: NodeServices = build_services(config, self.engine, metrics, federation_client(config))
        jobs_config = config.jobs.model_copy(update={"workers": threads})
        self.runner = JobRunner(self.engine, {}, jobs_config, metrics=metrics)
        attach(self.runner, self.services)
        self.models_imported = threading.Event()
        self.models_wanted = threading.Event()  # a model job is waiting: import now, busy intake or not
        self._stopping = threading.Event()
        for kind in MODEL_KINDS:
            self.runner.add_handler(kind, self._after_import(kind, self.runner.handlers[kind]))

    def _after_import(self, kind: str, handler: Handler) -> Handler:
        """``handler``, run once TensorFlow is imported: Python's import of TensorFlow is not safe from two
        threads at once, so only the warm-up thread imports it and model jobs wait for it (a ``segment``
        job of a study no rule routed to a model runs at once: it needs no model)."""

        def run(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any] | None:
            if kind == "segment" and not self.models_imported.is_set() and not self._routed(payload):
                return handler(ctx, payload)
            self.models_wanted.set()
            while not self.models_imported.wait(0.5):
                if ctx.stopping:
                    raise JobInterrupted("the worker stopped before its models were loaded")
            return handler(ctx, payload)

        return run

    def _routed(self, payload: dict[str, Any]) -> bool:
        """Whether the study of a ``segment`` job has a series routed to a model."""
        with session_scope(self.engine) as s:
            query = select(Series.id).where(Series.study_id == payload.get("study_id"), Series.model.is_not(None))
            return s.scalar(query.limit(1)) is not None

    def start(self, *, warm: bool = True) -> None:
        """Start claiming jobs (first releasing those of this host's ended processes); import TensorFlow and
        warm the routed models in the background, so write-backs run at once and the first study does not
        wait for TensorFlow to build its graph. The import waits for the intake (:meth:`_wait_for_intake`)."""
        self.runner.start()
        threading.Thread(target=self._import_and_warm, args=(warm,), name="laurel-warm-models", daemon=True).start()

    def _wait_for_intake(self) -> None:
        """Wait ``jobs.warm_delay_seconds`` after the start, then until no image arrived for
        ``jobs.warm_quiet_seconds``: importing TensorFlow takes seconds of both cores, and right after a
        restart a PACS sends what it queued meanwhile. A model job that is due ends the wait at once."""
        cfg = self.config.jobs
        deadline = time.monotonic() + cfg.warm_delay_seconds
        while not self.models_wanted.is_set() and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                quiet_for = self._seconds_since_last_image()
                if quiet_for is None or quiet_for >= cfg.warm_quiet_seconds:
                    return
                left = cfg.warm_quiet_seconds - quiet_for
            self.models_wanted.wait(min(max(left, 0.05), 1.0))

    def _seconds_since_last_image(self) -> float | None:
        """Seconds since the intake indexed its last image (``None``: none yet; ``0``: the index is busy)."""
        try:
            with session_scope(self.engine) as s:
                last = s.scalar(select(func.max(Study.last_received_at)))
        except Exception:  # a busy index only delays the warm-up
            logger.debug("could not read when the last image arrived", exc_info=True)
            return 0.0
        return None if last is None else (utcnow() - last).total_seconds()

    def _import_and_warm(self, warm: bool) -> None:
        from models.network import preload

        self._wait_for_intake()
        if self._stopping.is_set():
            return  # waiting model jobs see the stop and give their claims back
        try:
            preload()
        finally:
            self.models_imported.set()
        if warm:
            try:
                warm_models(self.services)
            except Exception:
                logger.exception("warming the models failed")

    def reload(self, config: NodeConfig) -> None:
        """Use a reloaded configuration (peers, routing, retention …) for the jobs that start from now on."""
        self.config = config
        self.services.config = config
        logger.info("worker: configuration reloaded")

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running jobs (up to ``timeout``) and close the index."""
        self._stopping.set()
        self.runner.stop(timeout)
        self.engine.dispose()
