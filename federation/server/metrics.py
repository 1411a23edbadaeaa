"""Prometheus metrics of the federation server (one registry per app, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class FederationMetrics:
    """Counters, gauges and histograms exposed at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "laurel_fed_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.uploads = Counter("laurel_fed_uploads", "updates accepted for queueing (202)", ["model"], registry=r)
        self.upload_refusals = Counter(
            "laurel_fed_upload_refusals", "uploads refused before queueing", ["status"], registry=r
        )
        self.updates_finished = Counter(
            "laurel_fed_updates_finished",
            "updates that reached a terminal state",
            ["model", "state"],
            registry=r,
        )
        self.queue_depth = Gauge("laurel_fed_queue_depth", "updates waiting (QUEUED)", registry=r)
        self.validation_seconds = Histogram(
            "laurel_fed_validation_seconds",
            "time to validate one package on the reference set",
            ["model", "stage"],
            buckets=_SECONDS,
            registry=r,
        )
        self.upload_to_terminal_seconds = Histogram(
            "laurel_fed_upload_to_terminal_seconds",
            "time from upload to accepted/rejected",
            ["model", "state"],
            buckets=_SECONDS,
            registry=r,
        )
        self.model_version = Gauge("laurel_fed_model_version", "latest published version", ["model"], registry=r)
        self.model_dice = Gauge("laurel_fed_model_dice", "validation Dice of the latest version", ["model"], registry=r)
        self.usage_reports = Counter("laurel_fed_usage_reports", "usage statistics received", ["model"], registry=r)
        self.auth_throttled = Counter(
            "laurel_fed_auth_throttled", "requests refused (429) after too many failed authentications", registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
