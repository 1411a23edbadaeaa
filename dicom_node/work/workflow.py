"""Plugs the review workflow into the DICOM spine: job handlers, the API, the federation sync.

The job kinds (one place documents them all):

========= ======================================= ==================================================
kind      payload                                 does
========= ======================================= ==================================================
segment   ``{study_id}``                          routed series → drafts → PENDING_REVIEW (or FAILED)
resegment ``{series_id, operator?}``              a series changed after its draft (late instances) or a
                                                  person asked: a new draft over every image
export    ``{peer, paths, study_id?, reason?}``   C-STORE of the files to the peer; a study's last
                                                  export moves it to EXPORTED
learn     ``{series_id}``                         incremental learning → new local model revision
upload    ``{model, revision, n_slices, ...}``    the revision's weights to the federation
sync      ``{}``                                  newer signed federation versions → new revisions
retention ``{}``                                  deletes received files past the retention period
webhook   ``{webhook, event, event_id, body}``    one signed POST of an event (:mod:`.events`,
                                                  :mod:`.webhooks`)
========= ======================================= ==================================================
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.core.claims import ANY_KIND, DeadHandler
from dicom_node.core.config import NodeConfig
from dicom_node.core.db import session_scope
from dicom_node.core.jobs import SYNC_JOB, JobContext, JobRunner
from dicom_node.work import learning_jobs
from dicom_node.work.events import WEBHOOK_JOB, Events
from dicom_node.work.export import EXPORT_JOB, export_handler
from dicom_node.work.learning import ModelRegistry
from dicom_node.work.pipeline import mark_segment_dead, resegment_series, segment_study
from dicom_node.work.retention import RETENTION_JOB, retention_handler
from dicom_node.work.review import mark_exported_if_done, rebuild_approved_seg
from dicom_node.work.services import NodeServices
from dicom_node.work.webhooks import secret_of, webhook_handler

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from dicom_node.core.metrics import NodeMetrics
    from federation.client import FederationClient

logger = logging.getLogger(__name__)


class WorkflowConfigError(ValueError):
    """The workflow cannot start with this configuration; the message says what to fix."""


def federation_client(cfg: NodeConfig) -> FederationClient | None:
    """The client of the configured federation (``None`` without one); the key comes from the environment."""
    if cfg.federation is None:
        return None
    from federation.client import FederationClient

    key = os.environ.get(cfg.federation.api_key_env, "")
    if not key:
        raise WorkflowConfigError(
            f"federation.url is set but the environment variable {cfg.federation.api_key_env} (the site's "
            "API key) is empty; set it to the key from `laurel federation add-site`, or remove federation"
        )
    if not cfg.federation.server_public_key:
        raise WorkflowConfigError(
            "federation.server_public_key is required: nodes load only packages signed by the server "
            "(print it with `laurel federation public-key`)"
        )
    try:
        return FederationClient(
            cfg.federation.url,
            key,
            server_public_key=cfg.federation.server_public_key,
            timeout=cfg.federation.timeout_seconds,
            allow_insecure_http=cfg.federation.allow_insecure_http,
            ca_file=cfg.federation.ca_file,
        )
    except ValueError as exc:
        raise WorkflowConfigError(f"federation: {exc}") from exc


def build_services(
    cfg: NodeConfig, engine: Engine, metrics: NodeMetrics, client: FederationClient | None = None
) -> NodeServices:
    """The workflow's services over one process's engine and metrics."""
    for hook in cfg.webhooks:
        try:
            secret_of(hook)
        except ValueError as exc:
            raise WorkflowConfigError(str(exc)) from exc
    trusted = []
    if client is not None and cfg.federation is not None and cfg.federation.server_public_key:
        from federation.client import parse_public_key

        trusted.append(parse_public_key(cfg.federation.server_public_key))
    registry = ModelRegistry(
        engine,
        cfg.models_dir,
        cfg.node.storage_dir / "node_signing_key.pem",
        trusted_keys=trusted,
    )
    return NodeServices(config=cfg, engine=engine, metrics=metrics, registry=registry, federation=client)


def attach(runner: JobRunner, services: NodeServices) -> None:
    """Register the handler of every job kind (the table in the module docstring) on ``runner``."""

    def rebuild(path: Path, seg_type: str) -> Path:
        return rebuild_approved_seg(services, path, seg_type)

    def export(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        # services.config is read at each job: a reload's peers apply to jobs already queued
        result = export_handler(services.config, services.metrics, rebuild=rebuild)(ctx, payload)
        if payload.get("study_id") is not None:
            with session_scope(services.engine) as s:
                mark_exported_if_done(s, int(payload["study_id"]), running_job_id=ctx.job_id, events=services.events)
        return result

    runner.add_handler(EXPORT_JOB, export)
    runner.add_handler(RETENTION_JOB, lambda ctx, p: retention_handler(services.config, services.metrics)(ctx, p))
    runner.add_handler("segment", lambda ctx, p: segment_study(services, int(p["study_id"]), ctx))
    for kind in dead_handlers(services.config):  # each dead letter is handled under the config in force then

        def dead(s: Session, payload: dict[str, Any], error: str, kind: str = kind) -> None:
            dead_handlers(services.config)[kind](s, payload, error)

        runner.on_dead(kind, dead)
    runner.add_handler(WEBHOOK_JOB, lambda ctx, p: webhook_handler(services.config)(ctx, p))
    runner.add_handler(
        "resegment", lambda ctx, p: resegment_series(services, int(p["series_id"]), ctx, operator=p.get("operator"))
    )
    runner.add_handler("learn", lambda ctx, p: learning_jobs.learn(services, p, ctx))
    runner.add_handler("upload", lambda ctx, p: learning_jobs.upload(services, p, ctx))
    runner.add_handler(SYNC_JOB, lambda ctx, p: learning_jobs.sync(services, p, ctx))


def dead_handlers(cfg: NodeConfig) -> dict[str, DeadHandler]:
    """What a dead letter of a kind means for the rest of the state (also applied when the supervisor recovers the
    jobs a crash left RUNNING and one has used all its attempts): a dead ``segment`` fails its study, and any
    dead letter is a ``job.dead`` event."""
    events = Events(cfg)
    return {
        "segment": lambda s, payload, error: mark_segment_dead(s, payload, error, events),
        ANY_KIND: events.job_dead,
    }


def warm_models(services: NodeServices) -> None:
    """Load every routed model and run it once on a tiny volume, so the first study does not wait for
    TensorFlow to build its graph (seconds on a CPU)."""
    import numpy as np

    from models.network import device_summary

    logger.info("models run on %s", device_summary())
    for name in sorted({rule.model for rule in services.config.routing}):
        try:
            _rev, pkg = services.registry.active(name)
        except Exception:
            logger.exception("model %s could not be loaded", name)
            continue
        volume = np.zeros((2, 64, 64), dtype=np.float32)
        volume[:, 16:48, 16:48] = 100.0
        started = time.perf_counter()
        pkg.apply(volume, (5.0, 1.0, 1.0))
        logger.info("model %s warmed up in %.1f s", name, time.perf_counter() - started)
