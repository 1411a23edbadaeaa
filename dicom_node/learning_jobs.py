"""The jobs that make a node learn and share: ``learn``, ``upload`` and ``sync``.

- ``learn`` {series_id}: incremental learning of the series' model on the approved labels (only slices that
  carry labels, at least ``segmentation.min_learning_slices``), stored as a new local revision; queues an
  ``upload`` when a federation is configured.
- ``upload`` {model, revision}: sends that revision's weights (never images) to the federation; the job is
  the durable outbox: it is retried with backoff while the server is down and survives restarts.
- ``sync`` {}: pulls every newer shared version the federation published (signature checked before the
  package is loaded); pinned models are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np
from sqlalchemy import select

from dicom_node import jobs
from dicom_node.db import Series, session_scope
from dicom_node.pipeline import load_npy, series_paths
from dicom_node.review import dice_scores
from dicom_node.review_tables import SeriesResult
from dicom_node.services import NodeServices

logger = logging.getLogger(__name__)


def labelled_slice_indices(labels: np.ndarray) -> list[int]:
    """Indices of the slices that carry at least one label (the slices a correction teaches)."""
    return [int(z) for z in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))]


def learn(services: NodeServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Learn from one approved series; returns the new revision (or why nothing was learned)."""
    from dicom_node.volume import load_series

    series_id = int(payload["series_id"])
    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        result = s.scalar(select(SeriesResult).where(SeriesResult.series_id == series_id))
        if series is None or result is None or result.approved_seg_path is None:
            raise jobs.PermanentJobError(f"series {series_id} has no approved segmentation to learn from")
        labels = load_npy(result.corrected_labels_path or result.draft_labels_path)
        paths = series_paths(series)
        model_name = result.model
    labelled = labelled_slice_indices(labels)
    minimum = services.config.segmentation.min_learning_slices
    if len(labelled) < minimum:
        logger.info("series %s: %d labelled slices (< %d); no learning", series_id, len(labelled), minimum)
        services.metrics.learning_runs.labels(model=model_name, outcome="skipped").inc()
        return {"skipped": f"only {len(labelled)} labelled slices; learning needs {minimum}"}
    volume = load_series(paths)
    rev, pkg = services.registry.active(model_name)
    started = time.perf_counter()
    before = pkg.apply(volume.array, volume.spacing)
    learned = pkg.learn(volume.array, labels, volume.spacing, slices=labelled)
    elapsed = time.perf_counter() - started
    values = sorted(int(lab["value"]) for lab in pkg.labels)
    local_dice = dice_scores(labels, before, values)["overall"] or 0.0
    new_rev = services.registry.add(
        learned,
        source="local",
        parent_revision=rev.revision,
        note=f"learned from series {series_id} ({len(labelled)} slices, Dice before {local_dice:.3f})",
    )
    services.metrics.learning_runs.labels(model=model_name, outcome="ok").inc()
    services.metrics.learning_seconds.labels(model=model_name).observe(elapsed)
    out: dict[str, Any] = {
        "model": model_name,
        "revision": new_rev.revision,
        "parent_revision": rev.revision,
        "slices": len(labelled),
        "local_dice": local_dice,
        "seconds": round(elapsed, 2),
    }
    if services.config.federation is not None:
        with session_scope(services.engine) as s:
            job = jobs.enqueue(
                s,
                "upload",
                {
                    "model": model_name,
                    "revision": new_rev.revision,
                    "n_slices": len(labelled),
                    "local_dice": local_dice,
                },
                dedupe_key=f"upload:{model_name}:{new_rev.revision}",
            )
            out["upload_job"] = job.id
    return out


def upload(services: NodeServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a local revision's weights to the federation; returns the server's update id."""
    from federation.client import FederationRefused

    client = services.federation
    if client is None:
        raise jobs.PermanentJobError("no federation is configured on this node")
    rev = services.registry.revision(payload["model"], int(payload["revision"]))
    pkg = services.registry.package(rev)
    try:
        update_id = client.upload_update(
            rev.name,
            rev.federation_version,
            pkg.weights,
            n_slices=int(payload["n_slices"]),
            local_dice=float(payload["local_dice"]),
            # the same key on every retry of this job: the server never merges this update twice
            idempotency_key=hashlib.sha256(f"{services.config.node.ae_title}:{rev.sha256}".encode()).hexdigest(),
        )
    except FederationRefused as exc:
        services.metrics.federation_uploads.labels(outcome="refused").inc()
        raise jobs.PermanentJobError(f"the federation refused the update: {exc}") from exc
    services.metrics.federation_uploads.labels(outcome="ok").inc()
    return {"update_id": update_id, "base_version": rev.federation_version}


def sync(services: NodeServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Pull newer shared versions of every model this node uses."""
    client = services.federation
    if client is None:
        return {"skipped": "no federation configured"}
    pulled: dict[str, int] = {}
    names = sorted({*services.registry.names(), *(r.model for r in services.config.routing)})
    for name in names:
        latest = client.latest_version(name)
        state = services.registry.state(name)
        if state["pinned"]:
            continue  # a pinned model is left alone until a person unpins it
        have = max((r["federation_version"] for r in state["revisions"] if r["source"] != "local"), default=0)
        if latest is None or latest <= have:
            continue
        data = client.download_bytes(name, latest)
        from models.package import load

        pkg = load(data, services.registry.trusted_keys)  # signature verified before dill sees a byte
        services.registry.add(
            pkg,
            source="federation",
            parent_revision=state["active_revision"],
            note=f"federation version {latest}",
            payload=data,
        )
        pulled[name] = latest
    services.metrics.federation_syncs.labels(outcome="ok").inc()
    return {"pulled": pulled}
