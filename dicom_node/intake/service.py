"""The intake process's work in one object: the durable store, the SCP, and the scheduler that notices
complete studies and queues the periodic jobs.

It imports nothing that loads a model (``tests/unit/test_layout.py`` checks it, and the supervisor's test
reads the intake process's memory map for TensorFlow), so a PACS is answered at the same rate while the
workers segment or learn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import session_scope
from dicom_node.core.jobs import RETENTION_JOB, SYNC_JOB, enqueue
from dicom_node.core.metrics import NodeMetrics
from dicom_node.intake.completion import complete_settled_studies, queue_late_arrivals
from dicom_node.intake.routing import Router
from dicom_node.intake.scp import StoreSCP
from dicom_node.intake.store import Store

logger = logging.getLogger(__name__)


class IntakeService:
    """SCP + store + completion scheduler over one index (see the module docstring)."""

    def __init__(
        self,
        config: NodeConfig,
        metrics: NodeMetrics,
        *,
        on_jobs_queued: Callable[[], None] | None = None,
        refresh_metrics: bool = False,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.engine = config.node.engine()
        self.router = Router(config.routing)
        self.store = Store(config.node.storage_dir, self.engine, self.router, metrics)
        self.scp = StoreSCP(config, self.store, metrics)
        self._on_jobs_queued = on_jobs_queued or (lambda: None)
        self._refresh_metrics_enabled = refresh_metrics
        self._scheduler: Any = None

    @property
    def port(self) -> int:
        """The SCP's TCP port."""
        return self.scp.port

    def start(self) -> None:
        """:meth:`open`, then :meth:`serve`."""
        self.open()
        self.serve()

    def open(self) -> None:
        """Open the store: recover what an unclean stop left (partial files, unindexed complete ones)."""
        self.store.open()

    def serve(self) -> None:
        """Start the scheduler, then serve DICOM."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._scheduler = scheduler
        self._schedule("completion", self.complete_studies, self.config.node.completion_scan_seconds)
        self._schedule("retention", self.queue_retention, self.config.retention.scan_interval_seconds)
        if self.config.federation is not None:
            self._schedule("federation-sync", self.queue_sync, self.config.federation.sync_interval_seconds)
        if self._refresh_metrics_enabled:
            self._schedule("metrics", self.refresh_metrics, 5.0)
        scheduler.start()
        self.scp.start()

    def stop(self, grace: float = 0.0) -> None:
        """Stop serving (open associations may finish for ``grace`` seconds), finish the scheduler, close the
        index and record a clean stop."""
        self.scp.stop(grace)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.store.close()
        self.engine.dispose()
        self.store.mark_clean_shutdown()

    def reload(self, config: NodeConfig) -> None:
        """Apply reloaded peers, routing and retention: associations accepted from now on get them, open ones
        finish under theirs; the retention scan keeps its new interval. The listener (AE title, port) stays:
        a change of it is applied by a new intake process."""
        router = Router(config.routing)
        self.scp.apply_policy(config.peers, router)
        old_interval = self.config.retention.scan_interval_seconds
        self.config = config
        self.scp.config = config
        self.router = router
        if self._scheduler is not None and config.retention.scan_interval_seconds != old_interval:
            self._schedule("retention", self.queue_retention, config.retention.scan_interval_seconds)
        logger.info("intake: configuration reloaded (%d peers, %d routing rules)", len(config.peers), router.rule_count)

    def restart_listener(self, config: NodeConfig, grace: float) -> None:
        """A new AE title, host or port in one process: stop listening, let open associations finish (up to
        ``grace`` s), then listen as ``config`` says, with its peers and routing."""
        self.scp.stop(grace)
        self.scp.config = config
        self.reload(config)
        self.scp.start()

    def _schedule(self, name: str, fn: Callable[[], None], seconds: float) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                logger.exception("periodic task %s failed", name)

        self._scheduler.add_job(run, "interval", seconds=seconds, id=name, name=name, replace_existing=True)

    def complete_studies(self) -> None:
        """Settled studies → COMPLETE + a segment job; series that changed after their draft → resegment."""
        completed = complete_settled_studies(self.engine, self.config.node.settle_seconds, metrics=self.metrics)
        if completed:
            logger.info("studies complete: %s", ", ".join(str(i) for i in completed))
            self._on_jobs_queued()
        if queue_late_arrivals(self.engine, self.config.node.settle_seconds):
            self._on_jobs_queued()

    def _enqueue_periodic(self, kind: str, seconds: float) -> None:
        bucket = int(time.time() // seconds)
        with session_scope(self.engine) as session:
            enqueue(session, kind, {}, dedupe_key=f"{kind}:{bucket}")
        self._on_jobs_queued()

    def queue_retention(self) -> None:
        """One retention job per scan interval (deduplicated across restarts)."""
        self._enqueue_periodic(RETENTION_JOB, self.config.retention.scan_interval_seconds)

    def queue_sync(self) -> None:
        """One federation sync job per sync interval (deduplicated across processes and restarts)."""
        assert self.config.federation is not None
        self._enqueue_periodic(SYNC_JOB, self.config.federation.sync_interval_seconds)

    def refresh_metrics(self) -> None:
        """Mirror the queue and study counts into the gauges."""
        with session_scope(self.engine) as session:
            self.metrics.refresh(session)
