"""Prometheus metrics of one node, each in its own :class:`~prometheus_client.CollectorRegistry`.

Every metric the node exposes is defined here (the API only renders :meth:`NodeMetrics.render`); code that
counts something takes the node's :class:`NodeMetrics` and never creates metrics of its own. Labels carry
internal names only (states, kinds, model and peer names), never patient data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: ``Content-Type`` of :meth:`NodeMetrics.render`.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class NodeMetrics:
    """The node's counters, gauges and histograms (names start with ``laurel_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._queue_labels: set[tuple[str, str]] = set()
        r = self.registry
        # DICOM in
        self.associations = Counter(
            "laurel_associations",
            "Association requests by outcome (accepted or the rejection reason)",
            ["outcome"],
            registry=r,
        )
        self.associations_active = Gauge(
            "laurel_associations_active",
            "Associations currently established",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.instances_received = Counter(
            "laurel_instances_received",
            "C-STORE requests by result (stored, duplicate, or the failure kind)",
            ["result"],
            registry=r,
        )
        self.bytes_received = Counter("laurel_received_bytes", "Bytes of datasets stored (as received)", registry=r)
        self.store_seconds = Histogram(
            "laurel_store_seconds",
            "Time from a complete C-STORE request to its durable index commit",
            buckets=_FAST,
            registry=r,
        )
        self.commit_batch_size = Histogram(
            "laurel_index_commit_batch_size",
            "Instances indexed per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        # Study journey
        self.studies_completed = Counter(
            "laurel_studies_completed", "Studies that finished arriving (COMPLETE)", registry=r
        )
        self.series_segmented = Counter(
            "laurel_series_segmented",
            "Series segmented, by model and outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.segmentation_seconds = Histogram(
            "laurel_segmentation_seconds", "Time to segment one series", ["model"], buckets=_SLOW, registry=r
        )
        self.studies_approved = Counter("laurel_studies_approved", "Studies approved by an operator", registry=r)
        self.studies_rejected = Counter("laurel_studies_rejected", "Studies rejected by an operator", registry=r)
        self.review_seconds = Histogram(
            "laurel_review_seconds",
            "Time from PENDING_REVIEW to the operator's decision",
            buckets=(60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
            registry=r,
        )
        self.study_turnaround_seconds = Histogram(
            "laurel_study_turnaround_seconds",
            "Time from COMPLETE to PENDING_REVIEW (what the radiologist waits for)",
            buckets=_SLOW,
            registry=r,
        )
        # DICOM out
        self.instances_exported = Counter(
            "laurel_instances_exported",
            "Instances sent with C-STORE, by peer and outcome",
            ["peer", "outcome"],
            registry=r,
        )
        self.export_seconds = Histogram(
            "laurel_export_seconds", "Time of one export job attempt", ["peer"], buckets=_SLOW, registry=r
        )
        # Learning and federation
        self.learning_runs = Counter(
            "laurel_learning_runs",
            "Incremental learning runs by model and outcome (accepted, rejected by the guard, deferred, skipped)",
            ["model", "outcome"],
            registry=r,
        )
        self.learning_reference_dice = Gauge(
            "laurel_learning_reference_dice",
            "Dice on the site's reference set at the last guarded step, of the candidate and the active revision",
            ["model", "revision"],
            registry=r,
        )
        self.learning_site_cases = Gauge(
            "laurel_learning_site_cases",
            "Approved series kept on site for guarded learning, by role (reference, replay)",
            ["model", "role"],
            registry=r,
        )
        self.learning_seconds = Histogram(
            "laurel_learning_seconds",
            "Time of one incremental learning run",
            ["model"],
            buckets=_SLOW,
            registry=r,
        )
        self.federation_uploads = Counter(
            "laurel_federation_uploads",
            "Weight uploads to the federation by outcome",
            ["outcome"],
            registry=r,
        )
        self.federation_syncs = Counter(
            "laurel_federation_syncs", "Model syncs from the federation by outcome", ["outcome"], registry=r
        )
        # Jobs
        self.jobs_finished = Counter(
            "laurel_jobs_finished",
            "Job attempts by kind and outcome (done, retry, dead)",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "laurel_job_seconds", "Duration of one job attempt", ["kind"], buckets=_SLOW, registry=r
        )
        self.queue_depth = Gauge(
            "laurel_queue_depth",
            "Jobs by kind and state (refreshed by the scheduler)",
            ["kind", "state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dead_letters = Gauge(
            "laurel_dead_letters", "Jobs in the DEAD state", registry=r, multiprocess_mode="mostrecent"
        )
        self.studies = Gauge(
            "laurel_studies",
            "Studies by state (refreshed by the scheduler)",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.retention_deleted_files = Counter(
            "laurel_retention_deleted_files", "Received files deleted by the retention rules", registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition: this process's registry, or, in a child of ``laurel serve``
        (``PROMETHEUS_MULTIPROC_DIR`` set), the sum over every process of the node."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder:
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined, path=folder)
            return generate_latest(combined)
        return generate_latest(self.registry)

    def refresh(self, session: Session) -> None:
        """Update the gauges that mirror the database (queue depth, dead letters, studies by state)."""
        from sqlalchemy import func, select

        from dicom_node.core.db import Job, JobState, Study, StudyState

        job_rows: Iterable[tuple[str, str, int]] = session.execute(
            select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
        ).all()
        dead = 0
        seen: set[tuple[str, str]] = set()
        for kind, state, count in job_rows:
            self.queue_depth.labels(kind=kind, state=state).set(count)
            seen.add((kind, state))
            if state == JobState.DEAD:
                dead += count
        for kind, state in self._queue_labels - seen:  # a combination that emptied reads 0, not its last value
            self.queue_depth.labels(kind=kind, state=state).set(0)
        self._queue_labels |= seen
        self.dead_letters.set(dead)
        counts = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).all())
        for state in StudyState:
            self.studies.labels(state=state.value).set(counts.get(state.value, 0))
