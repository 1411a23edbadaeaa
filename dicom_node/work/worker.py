"""A worker process's work in one object: a job runner with every workflow handler, and the models warmed.

``laurel serve`` runs ``jobs.workers`` of these as child processes at a lower CPU priority (``jobs.worker_nice``)
than the intake; ``laurel worker`` runs them alone, on another host that shares the index and storage.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from dicom_node.core.config import NodeConfig
from dicom_node.core.jobs import JobRunner
from dicom_node.core.metrics import NodeMetrics
from dicom_node.work.workflow import attach, build_services, federation_client, warm_models

if TYPE_CHECKING:
    from dicom_node.work.services import NodeServices

logger = logging.getLogger(__name__)


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

    def start(self, *, warm: bool = True) -> None:
        """Start claiming jobs (first releasing those of this host's ended processes) and warm the routed
        models in the background, so the first study does not wait for TensorFlow."""
        if warm:
            from models.network import preload

            preload()  # before any thread imports TensorFlow: its import is not thread-safe
        self.runner.start()
        if warm:
            threading.Thread(target=self._warm, name="laurel-warm-models", daemon=True).start()

    def _warm(self) -> None:
        try:
            warm_models(self.services)
        except Exception:
            logger.exception("warming the models failed")

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running jobs (up to ``timeout``) and close the index."""
        self.runner.stop(timeout)
        self.engine.dispose()
