"""A worker process's work in one object: a job runner with every workflow handler, and the models warmed.

``laurel serve`` runs ``jobs.workers`` of these as child processes at a lower CPU priority (``jobs.worker_nice``)
than the intake; ``laurel worker`` runs them alone, on another host that shares the index and storage.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from dicom_node.core.config import NodeConfig
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
        for kind in MODEL_KINDS:
            self.runner.add_handler(kind, self._after_import(self.runner.handlers[kind]))

    def _after_import(self, handler: Handler) -> Handler:
        """``handler``, run once TensorFlow is imported: Python's import of TensorFlow is not safe from two
        threads at once, so only the warm-up thread imports it and model jobs wait for it."""

        def run(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any] | None:
            while not self.models_imported.wait(0.5):
                if ctx.stopping:
                    raise JobInterrupted("the worker stopped before its models were loaded")
            return handler(ctx, payload)

        return run

    def start(self, *, warm: bool = True) -> None:
        """Start claiming jobs (first releasing those of this host's ended processes); import TensorFlow and
        warm the routed models in the background, so write-backs run at once and the first study does not
        wait for TensorFlow to build its graph."""
        self.runner.start()
        threading.Thread(target=self._import_and_warm, args=(warm,), name="laurel-warm-models", daemon=True).start()

    def _import_and_warm(self, warm: bool) -> None:
        from models.network import preload

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
        self.runner.stop(timeout)
        self.engine.dispose()
