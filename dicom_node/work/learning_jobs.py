"""The jobs that make a node learn and share: ``learn``, ``upload`` and ``sync``.

- ``learn`` {series_id, approval}: *guarded* incremental learning of the series' model on the approved labels
  (only slices that carry labels, at least ``segmentation.min_learning_slices``), with replayed slices of
  earlier approvals (:mod:`dicom_node.work.guard`). The candidate is stored as a new local revision with its
  verdict on the site's reference set: active when it is not worse there (beyond ``learning.tolerance``),
  else kept as a rejected candidate with the reason. The approval's slices join the reference set or the
  replay buffer in the same transaction; an ``upload`` is queued with it only for an accepted revision (and
  a configured federation). **Exactly once per
  approval**: the approval (the approved SEG's SOP Instance UID) is the revision's ``source_key``, checked
  before training and again, by a unique index, when the revision is recorded. Learning jobs of one model
  run one at a time (the model's lease) and each starts from the active revision *at the time it holds the
  lease*, so two approvals give two revisions in a chain, never two siblings.
- ``upload`` {model, revision}: sends that revision's weights (never images) to the federation; the job is
  the durable outbox: it is retried with backoff while the server is down and survives restarts, and its
  ``Idempotency-Key`` (a digest of the node and the revision) makes a retry return the same update.
- ``sync`` {}: pulls every newer shared version the federation published. A package is taken only when it
  is signed by the server's key (never because it is a zoo package), its signed manifest names the model and
  the version the server announced, and that version is newer than every shared version the node holds; a
  version already pulled adds nothing. Pinned models are skipped; a model whose lease another job holds is
  retried shortly.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core import jobs
from dicom_node.core.db import Job, Series, session_scope
from dicom_node.core.jobs import JobContext, JobDeferred, fault_point
from dicom_node.core.model_tables import ModelRevision
from dicom_node.core.review_tables import SeriesResult
from dicom_node.work.guard import REFERENCE, REPLAY, GuardSettings, SiteCase, StepResult, admit, guarded_step
from dicom_node.work.learning import REJECTED, RegistryError
from dicom_node.work.pipeline import load_npy
from dicom_node.work.review import dice_scores
from dicom_node.work.services import NodeServices

logger = logging.getLogger(__name__)

#: How long a learn or sync job may hold a model's lease before another job may take it over.
LEASE_SECONDS = 1800.0


def labelled_slice_indices(labels: np.ndarray) -> list[int]:
    """Indices of the slices that carry at least one label (the slices a correction teaches)."""
    return [int(z) for z in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))]


def _queue_upload(services: NodeServices, s: Session, rev: ModelRevision, n_slices: int, local_dice: float) -> int:
    job = jobs.enqueue(
        s,
        "upload",
        {"model": rev.name, "revision": rev.revision, "n_slices": n_slices, "local_dice": local_dice},
        dedupe_key=f"upload:{rev.name}:{rev.revision}",
    )
    return job.id


def learn(services: NodeServices, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Learn from one approval of a series; returns the new (or already recorded) revision."""
    from dicom_node.dicom.volume import load_series

    series_id = int(payload["series_id"])
    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        result = s.scalar(select(SeriesResult).where(SeriesResult.series_id == series_id))
        if series is None or result is None or result.approved_seg_path is None:
            raise jobs.PermanentJobError(f"series {series_id} has no approved segmentation to learn from")
        approval = str(payload.get("approval") or result.approved_seg_sop_uid)
        labels_path = result.approved_labels_path or result.corrected_labels_path or result.draft_labels_path
        labels = load_npy(services.path(labels_path))
        paths = services.instance_paths(series)
        model_name = result.model
    source_key = f"approval:{approval}"
    done = services.registry.find(model_name, source_key)
    if done is not None:  # learned before a crash or a stop: never twice
        return _already_learned(services, done)
    labelled = labelled_slice_indices(labels)
    minimum = services.config.segmentation.min_learning_slices
    if len(labelled) < minimum:
        logger.info("series %s: %d labelled slices (< %d); no learning", series_id, len(labelled), minimum)
        services.metrics.learning_runs.labels(model=model_name, outcome="skipped").inc()
        return {"skipped": f"only {len(labelled)} labelled slices; learning needs {minimum}"}
    holder = services.registry.acquire_lease(model_name, ctx.job_id, LEASE_SECONDS)
    if holder is not None:
        raise JobDeferred(f"model {model_name} is being changed by job {holder}", delay=2.0)
    try:
        done = services.registry.find(model_name, source_key)  # recorded while we waited for the lease?
        if done is not None:
            return _already_learned(services, done)
        kept_as = services.site_cases.role_of(model_name, source_key)
        if kept_as is not None:  # deferred before a crash or a stop: kept, never learned later
            rev = services.registry.active(model_name)[0]
            return _deferred(services, model_name, rev.revision, "kept before (deferred step)", kept_as, None)
        volume = load_series(paths)
        rev, pkg = services.registry.active(model_name)  # the newest, now that nobody else changes it
        started = time.perf_counter()
        before = pkg.apply(volume.array, volume.spacing)
        values = sorted(int(lab["value"]) for lab in pkg.labels)
        local_dice = dice_scores(labels, before, values)["overall"] or 0.0
        lease = LeaseKeeper(services, model_name, ctx.job_id)
        step, role, case, case_path = _guarded_step(
            services, model_name, pkg, volume, labels, labelled, source_key, lease
        )
        elapsed = time.perf_counter() - started
        verdict = step.verdict
        fault_point("learn.before_record", ctx)
        lease.check()  # still ours: nobody else changed the model while this step learned and was judged
        upload_job: list[int] = []
        limits = {REFERENCE: services.config.learning.reference_cases, REPLAY: services.config.learning.replay_cases}
        if step.deferred:  # the reference set is still filling: keep the series, change no model
            with session_scope(services.engine) as s:
                services.site_cases.record(s, model_name, role, case, case_path, series_id, limits[role])
            fault_point("learn.after_keep", ctx)
            services.site_cases.prune(model_name)
            return _deferred(services, model_name, rev.revision, verdict.reason, role, local_dice)

        def on_record(s: Session, new: ModelRevision) -> None:
            services.site_cases.record(s, model_name, role, case, case_path, series_id, limits[role])
            if services.config.federation is not None and verdict.accepted:
                upload_job.append(_queue_upload(services, s, new, len(step.learned), local_dice))

        new_rev = services.registry.add(
            step.candidate,
            source="local",
            parent_revision=rev.revision,
            note=f"learned from series {series_id} ({len(step.learned)} slices, Dice before {local_dice:.3f})",
            source_key=source_key,
            on_record=on_record,
            verdict=verdict if services.config.learning.guard else None,
        )
        fault_point("learn.after_record", ctx)
        services.site_cases.prune(model_name)  # under the lease: no other step is writing a case file now
    finally:
        services.registry.release_lease(model_name, ctx.job_id)
    outcome = "accepted" if verdict.accepted else "rejected"
    services.metrics.learning_runs.labels(model=model_name, outcome=outcome).inc()
    services.metrics.learning_seconds.labels(model=model_name).observe(elapsed)
    if verdict.candidate_dice is not None and verdict.active_dice is not None:
        services.metrics.learning_reference_dice.labels(model=model_name, revision="candidate").set(
            verdict.candidate_dice
        )
        services.metrics.learning_reference_dice.labels(model=model_name, revision="active").set(verdict.active_dice)
    for kept_role, n in services.site_cases.counts(model_name).items():
        services.metrics.learning_site_cases.labels(model=model_name, role=kept_role).set(n)
    out: dict[str, Any] = {
        "model": model_name,
        "revision": new_rev.revision,
        "parent_revision": rev.revision,
        "activated": verdict.accepted,
        "verdict": verdict.reason,
        "slices": len(step.learned),
        "held_out_slices": len(step.held_out),
        "replayed_slices": step.replayed,
        "kept_as": role,
        "local_dice": local_dice,
        "seconds": round(elapsed, 2),
    }
    if upload_job:
        out["upload_job"] = upload_job[0]
    return out


def guard_settings(services: NodeServices) -> GuardSettings:
    """The node's guarded-learning settings (``learning`` and ``segmentation.min_learning_slices``)."""
    cfg = services.config.learning
    return GuardSettings(
        tolerance=cfg.tolerance,
        min_reference_cases=cfg.min_reference_cases,
        reference_cases=cfg.reference_cases,
        replay_cases=cfg.replay_cases,
        case_slices=cfg.case_slices,
        replay_slices=cfg.replay_slices,
        holdout_every=cfg.holdout_every,
        soften=tuple(cfg.soften),
        fallback=cfg.fallback,
        min_learning_slices=services.config.segmentation.min_learning_slices,
    )


class LeaseKeeper:
    """Renews a job's model lease while its step runs (at most every ``LEASE_SECONDS / 6``), as the
    learning step's progress callback; :meth:`check` renews now. Either raises :class:`JobDeferred` when
    the lease was lost (it expired and another job changes the model): the step is redone later, on the
    model as that job left it, and nothing of this one is recorded."""

    def __init__(self, services: NodeServices, model_name: str, job_id: int, seconds: float = LEASE_SECONDS) -> None:
        self.registry = services.registry
        self.model_name, self.job_id, self.seconds = model_name, job_id, seconds
        self._last = time.monotonic()

    def check(self) -> None:
        """Renew the lease now, or raise :class:`JobDeferred` if it is not ours any more."""
        self._last = time.monotonic()
        if not self.registry.renew_lease(self.model_name, self.job_id, self.seconds):
            raise JobDeferred(f"model {self.model_name}: this job's learning lease was lost; learning again", 2.0)

    def __call__(self, _fraction: float) -> None:
        if time.monotonic() - self._last >= self.seconds / 6:
            self.check()


def _guarded_step(
    services: NodeServices,
    model_name: str,
    pkg: Any,
    volume: Any,
    labels: np.ndarray,
    labelled: list[int],
    source_key: str,
    lease: LeaseKeeper | None = None,
) -> tuple[StepResult, str, SiteCase, str]:
    """Learn a candidate (with replay), judge it on the reference set, and keep the approval's slices."""
    settings = guard_settings(services)
    store = services.site_cases
    reference = store.cases(model_name, REFERENCE)
    replay = store.cases(model_name, REPLAY)
    step = guarded_step(
        pkg,
        volume.array,
        labels,
        volume.spacing,
        labelled,
        reference,
        replay,
        settings,
        validate=services.config.learning.guard,
        progress=lease,
    )
    role, case = admit(source_key, volume.array, labels, volume.spacing, step)
    return step, role, case, store.write(model_name, case)


def _deferred(
    services: NodeServices, model_name: str, revision: int, reason: str, role: str, local_dice: float | None
) -> dict[str, Any]:
    """The result of a learn job whose step was deferred (no new revision; the series was kept)."""
    services.metrics.learning_runs.labels(model=model_name, outcome="deferred").inc()
    for kept_role, n in services.site_cases.counts(model_name).items():
        services.metrics.learning_site_cases.labels(model=model_name, role=kept_role).set(n)
    return {
        "model": model_name,
        "revision": revision,
        "activated": False,
        "deferred": reason,
        "slices": 0,
        "kept_as": role,
        "local_dice": local_dice,
    }


def _already_learned(services: NodeServices, rev: ModelRevision) -> dict[str, Any]:
    """The approval was learned already (a re-run after a crash): make sure its upload is queued."""
    out: dict[str, Any] = {"model": rev.name, "revision": rev.revision, "already_learned": True}
    if services.config.federation is not None and rev.verdict != REJECTED:
        with session_scope(services.engine) as s:
            existing = s.scalar(select(Job).where(Job.dedupe_key == f"upload:{rev.name}:{rev.revision}"))
            if existing is None:
                out["upload_job"] = _queue_upload(services, s, rev, 0, 0.0)
    logger.info("model %s revision %d already records this approval; not learned again", rev.name, rev.revision)
    return out


def upload(services: NodeServices, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Send a local revision's weights to the federation; returns the server's update id."""
    from federation.client import FederationRefused

    client = services.federation
    if client is None:
        raise jobs.PermanentJobError("no federation is configured on this node")
    rev = services.registry.revision(payload["model"], int(payload["revision"]))
    pkg = services.registry.package(rev)
    fault_point("upload.before_send", ctx)
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
    fault_point("upload.after_send", ctx)
    services.metrics.federation_uploads.labels(outcome="ok").inc()
    return {"update_id": update_id, "base_version": rev.federation_version}


class SyncRefused(Exception):
    """A package the federation offered does not prove what it claims; the message says why."""


def _check_offer(services: NodeServices, name: str, announced: int, data: bytes) -> Any:
    """The package if it is the server-signed ``name`` version ``announced``; :class:`SyncRefused` otherwise."""
    from models.package import PackageError, load
    from models.signing import parse

    try:
        manifest = parse(data).manifest  # JSON only; the signature below covers it
        pkg = load(data, services.registry.federation_keys, allow_zoo=False)
    except PackageError as exc:
        raise SyncRefused(f"{name} version {announced}: {exc}") from exc
    if manifest.get("name") != name or pkg.name != name:
        raise SyncRefused(f"the server announced {name} version {announced} but sent model {manifest.get('name')!r}")
    if manifest.get("version") != announced or pkg.version != announced:
        raise SyncRefused(
            f"the server announced {name} version {announced} but the signed package is version "
            f"{manifest.get('version')!r}"
        )
    _rev, current = services.registry.active(name)
    if pkg.family_id != current.family_id:
        raise SyncRefused(f"{name} version {announced} belongs to another model family")
    return pkg


def sync(services: NodeServices, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Pull newer shared versions of every model this node uses (see the module docstring)."""
    client = services.federation
    if client is None:
        return {"skipped": "no federation configured"}
    pulled: dict[str, int] = {}
    refused: dict[str, str] = {}
    busy: list[str] = []
    names = sorted({*services.registry.names(), *(r.model for r in services.config.routing)})
    for name in names:
        try:
            state = services.registry.state(name)
        except RegistryError:
            continue  # not a model this node can have (no zoo package): nothing to sync
        if state["pinned"]:
            continue  # a pinned model is left alone until a person unpins it
        latest = client.latest_version(name)
        have = services.registry.newest_shared_version(name)
        if latest is None or latest <= have:
            continue
        if services.registry.acquire_lease(name, ctx.job_id, LEASE_SECONDS) is not None:
            busy.append(name)
            continue
        try:
            if services.registry.find(name, f"federation:{latest}") is not None:
                continue
            data = client.download_bytes(name, latest)
            try:
                pkg = _check_offer(services, name, latest, data)
            except SyncRefused as exc:
                logger.error("sync refused a package: %s", exc)
                services.metrics.federation_syncs.labels(outcome="refused").inc()
                refused[name] = str(exc)
                continue
            fault_point("sync.before_record", ctx)
            LeaseKeeper(services, name, ctx.job_id).check()  # the download may have outlived the lease
            services.registry.add(
                pkg,
                source="federation",
                parent_revision=state["active_revision"],
                note=f"federation version {latest}",
                payload=data,
                source_key=f"federation:{latest}",
            )
            pulled[name] = latest
        finally:
            services.registry.release_lease(name, ctx.job_id)
    if busy:
        raise JobDeferred(f"models {', '.join(busy)} are being changed by another job; sync again shortly", 5.0)
    services.metrics.federation_syncs.labels(outcome="ok").inc()
    out: dict[str, Any] = {"pulled": pulled}
    if refused:
        out["refused"] = refused
    return out
