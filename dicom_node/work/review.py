"""The operator's decisions: corrected labels, approve, reject.

Approval turns each series' corrected labels (or the untouched draft) into the **approved SEG** — a new
series that references the source images, names the operator as ContentCreatorName, says the algorithm was
semi-automatic and carries no draft marking — records the Dice between draft and approved labels as usage
statistics, and queues three kinds of durable jobs: ``export`` of the approved SEGs to every peer that
receives results, ``learn`` (incremental learning on the approved slices) and, from the learning job,
``upload`` to the federation. Every decision is written to the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core import jobs
from dicom_node.core.db import Series, SeriesState, Study, StudyState, session_scope, set_study_state, utcnow
from dicom_node.core.review_tables import AuditEvent, SeriesResult
from dicom_node.work.events import Events
from dicom_node.work.export import EXPORT_MAX_ATTEMPTS
from dicom_node.work.pipeline import APPROVED_SERIES_NUMBER, load_npy, npy_bytes, write_atomic
from dicom_node.work.services import NodeServices

logger = logging.getLogger(__name__)


class ReviewConflict(Exception):
    """The request does not fit the study's state (HTTP 409); the message says why."""


class InvalidLabels(ValueError):
    """The labels cannot be accepted (HTTP 422); the message says what to fix."""


class NotFound(LookupError):
    """No such study or series (HTTP 404)."""


def dice_scores(reference: np.ndarray, other: np.ndarray, values: list[int]) -> dict[str, Any]:
    """Dice of ``other`` against ``reference`` per label value and overall (the paper's voxel-weighted mean)."""
    from models.metrics import dice

    scores = dice(other, reference, values)
    overall = scores.pop("overall")
    scores.pop("mean", None)
    return {
        "overall": round(overall, 6) if overall == overall else None,  # NaN: no labels at all
        "per_label": {k: round(v, 6) for k, v in scores.items()},
    }


def _study(s: Session, study_id: int) -> Study:
    study = s.get(Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    return study


def _series_result(s: Session, series_id: int) -> tuple[Series, SeriesResult]:
    series = s.get(Series, series_id)
    if series is None:
        raise NotFound(f"series {series_id} does not exist")
    result = s.scalar(select(SeriesResult).where(SeriesResult.series_id == series_id))
    if result is None:
        raise ReviewConflict(f"series {series_id} has no draft segmentation (state {series.state})")
    return series, result


def check_identity(kind: str, expected: str, named: str | None) -> None:
    """A write must name the DICOM UID of what it is for; a missing or other UID is refused (HTTP 409)."""
    keyword = f"{kind}InstanceUID"
    if not named:
        raise ReviewConflict(
            f"the request does not say which {kind.lower()} it is for: send its {keyword}; nothing was stored"
        )
    if named != expected:
        raise ReviewConflict(
            f"the request is for {keyword} {named}, but this {kind.lower()} is {expected}: the client has another "
            f"{kind.lower()} open (another node or a stale view); reload it. Nothing was stored"
        )


def allowed_values(model_labels: list[dict[str, Any]] | None, n_labels: int) -> set[int]:
    """Label values a corrected volume may contain: 0 and the model's labels."""
    if model_labels:
        return {0, *(int(lab["value"]) for lab in model_labels)}
    return set(range(n_labels + 1))


def current_labels(services: NodeServices, series_id: int, version: str = "current") -> np.ndarray:
    """The draft, the corrected or the current (corrected if any, else draft) labels of a series."""
    with session_scope(services.engine) as s:
        _series, result = _series_result(s, series_id)
        if version == "draft":
            return load_npy(services.path(result.draft_labels_path))
        if version == "corrected":
            if result.corrected_labels_path is None:
                raise NotFound(f"series {series_id} has no corrected labels yet")
            return load_npy(services.path(result.corrected_labels_path))
        return load_npy(services.path(result.corrected_labels_path or result.draft_labels_path))


def put_labels(
    services: NodeServices, series_id: int, labels: np.ndarray, operator: str, series_uid: str | None
) -> dict[str, Any]:
    """Store an operator's corrected labels for a series awaiting review (the study stays PENDING_REVIEW).

    ``series_uid`` is the SeriesInstanceUID the client has open; it must be this series'.
    """
    with session_scope(services.engine) as s:
        series, result = _series_result(s, series_id)
        check_identity("Series", series.SeriesInstanceUID, series_uid)
        study = _study(s, series.study_id)
        if study.state != StudyState.PENDING_REVIEW:
            raise ReviewConflict(f"study {study.id} is {study.state}; labels can only change while PENDING_REVIEW")
        draft = load_npy(services.path(result.draft_labels_path))
        if labels.shape != draft.shape:
            raise InvalidLabels(
                f"labels have shape {list(labels.shape)}; this series needs {list(draft.shape)} (z, y, x)"
            )
        if labels.dtype != np.uint8:
            raise InvalidLabels(f"labels must be uint8, not {labels.dtype}")
        pkg = services.registry.package(services.registry.revision(result.model, result.model_revision))
        allowed = allowed_values(pkg.labels, int(draft.max()))
        present = {int(v) for v in np.unique(labels)}
        unknown = sorted(present - allowed)
        if unknown:
            raise InvalidLabels(f"label values {unknown} are not labels of model {result.model!r}")
        path = services.result_dir(study.id, series_id) / "corrected_labels.npy"
        write_atomic(path, npy_bytes(labels))  # the file is whole before the row names it
        result.corrected_labels_path = services.stored(path)
        result.corrected_at = utcnow()
        result.corrected_by = operator
        s.add(AuditEvent(operator=operator, action="correct", study_id=study.id, detail={"series_id": series_id}))
    return {"series_id": series_id, "stored": True, "SeriesInstanceUID": series_uid, "corrected_by": operator}


@dataclass
class _Approved:
    """One series' approval, written to files before the decision is recorded."""

    series_id: int
    labels_path: Path
    seg_path: Path
    sop_uid: str
    dice: dict[str, Any]


def approve(
    services: NodeServices, study_id: int, operator: str, comment: str | None = None, study_uid: str | None = None
) -> dict[str, Any]:
    """Approve a study: approved SEGs, Dice statistics, export and learning jobs, audit entry.

    ``study_uid`` is the StudyInstanceUID the client has open; it must be this study's.

    The SEGs and a snapshot of the approved labels are written first (files named by the SEG's SOP
    Instance UID); the decision, the results, the jobs and the audit entry are then recorded in **one**
    transaction, so a crash leaves either a study still PENDING_REVIEW (and unused files) or a whole
    approval, never half of one. A concurrent decision makes the later one a conflict.
    """
    from dicom_node.dicom.seg import build_seg, seg_to_bytes
    from dicom_node.dicom.volume import load_series

    with session_scope(services.engine) as s:
        study = _study(s, study_id)
        check_identity("Study", study.StudyInstanceUID, study_uid)
        if study.state != StudyState.PENDING_REVIEW:
            raise ReviewConflict(f"study {study_id} is {study.state}; only a study PENDING_REVIEW can be approved")
        busy = [se.id for se in study.series if se.state == SeriesState.SEGMENTING]
        if busy:
            raise ReviewConflict(
                f"series {', '.join(map(str, busy))} of study {study_id} is being segmented again (images arrived "
                "after its draft); approve the new draft in a few seconds"
            )
        changed = [se.id for se in study.series if se.changed_since_draft]
        if changed:
            raise ReviewConflict(
                f"series {', '.join(map(str, changed))} of study {study_id} received images after its draft was "
                "corrected: re-segment it (POST /api/v1/series/{id}/resegment) and review the new draft"
            )
        work = [
            (se.id, services.instance_paths(se))
            for se in study.series
            if se.state == SeriesState.SEGMENTED and se.model is not None
        ]
        pending_since = study.updated_at
    if not work:
        raise ReviewConflict(f"study {study_id} has no segmented series to approve")
    approved: list[_Approved] = []
    try:
        for series_id, paths in work:
            with session_scope(services.engine) as s:
                _series, result = _series_result(s, series_id)
                draft = load_npy(services.path(result.draft_labels_path))
                final = load_npy(services.path(result.corrected_labels_path or result.draft_labels_path))
                model_name, model_revision = result.model, result.model_revision
                superseded = result.superseded_seg_path
            pkg = services.registry.package(services.registry.revision(model_name, model_revision))
            volume = load_series(paths)
            if volume.array.shape != final.shape:  # a draft and its series always agree in shape
                raise ReviewConflict(
                    f"series {series_id} now has {volume.array.shape[0]} slices, its draft {final.shape[0]}: images "
                    "arrived after the draft; wait for the new draft (a few seconds) or re-segment it"
                )
            seg = build_seg(
                volume,
                final,
                pkg.region,
                draft=False,
                algorithm_name=pkg.name,
                algorithm_version=pkg.version,
                operator=operator if "^" in operator else f"{operator}^",  # PN: the name as the family name
                seg_type=services.config.segmentation.seg_type,
                series_number=APPROVED_SERIES_NUMBER,
                label_table=pkg.labels,
            )
            if superseded is not None:  # an amendment names the approved SEG it supersedes
                from pydicom import dcmread

                from dicom_node.dicom.seg import reference_predecessor

                reference_predecessor(seg, dcmread(services.path(superseded), stop_before_pixels=True))
            uid = str(seg.SOPInstanceUID)
            folder = services.result_dir(study_id, series_id)
            item = _Approved(
                series_id,
                folder / f"approved_labels-{uid}.npy",
                folder / f"approved_seg-{uid}.dcm",
                uid,
                dice_scores(final, draft, sorted(int(lab["value"]) for lab in pkg.labels)),  # approved = reference
            )
            write_atomic(item.labels_path, npy_bytes(final))
            write_atomic(item.seg_path, seg_to_bytes(seg))
            approved.append(item)
        queued = _record_approval(services, study_id, operator, comment, approved)
    except BaseException:
        for item in approved:  # nothing recorded names them
            item.labels_path.unlink(missing_ok=True)
            item.seg_path.unlink(missing_ok=True)
        raise
    services.metrics.studies_approved.inc()
    if pending_since is not None:
        services.metrics.review_seconds.observe(max(0.0, (utcnow() - pending_since).total_seconds()))
    logger.info("study %s approved by an operator; %d jobs queued", study_id, len(queued))
    return {
        "state": StudyState.APPROVED.value,
        "dice": {str(a.series_id): a.dice for a in approved},
        "jobs": queued,
    }


def _record_approval(
    services: NodeServices, study_id: int, operator: str, comment: str | None, approved: list[_Approved]
) -> list[dict[str, Any]]:
    """The decision, its results, its jobs and its audit entry, in one transaction."""
    queued: list[dict[str, Any]] = []
    now = utcnow()
    with session_scope(services.engine) as s:
        study = _study(s, study_id)
        if study.state != StudyState.PENDING_REVIEW:  # a concurrent decision won
            raise ReviewConflict(f"study {study_id} is {study.state}; it was decided meanwhile")
        for item in approved:
            _series, result = _series_result(s, item.series_id)
            result.approved_labels_path = services.stored(item.labels_path)
            result.approved_seg_path = services.stored(item.seg_path)
            result.approved_seg_sop_uid = item.sop_uid
            result.approved_by = operator
            result.approved_at = now
            result.dice = item.dice
            result.superseded_seg_path = None
        set_study_state(s, study, StudyState.APPROVED)
        approval = approved[0].sop_uid  # names this approval in the jobs' dedupe keys
        paths = [services.stored(item.seg_path) for item in approved]
        for peer in services.config.peers:
            if peer.receive_results:
                job = jobs.enqueue(
                    s,
                    "export",
                    {"peer": peer.name, "paths": paths, "study_id": study_id},
                    dedupe_key=f"export:{study_id}:{peer.name}:{approval}",
                    max_attempts=EXPORT_MAX_ATTEMPTS,  # retried until jobs.export_retry_hours
                )
                queued.append({"id": job.id, "kind": job.kind})
        for item in approved:
            job = jobs.enqueue(
                s,
                "learn",
                {"series_id": item.series_id, "approval": item.sop_uid},
                dedupe_key=f"learn:{item.series_id}:{item.sop_uid}",
            )
            queued.append({"id": job.id, "kind": job.kind})
        s.add(
            AuditEvent(
                operator=operator,
                action="approve",
                study_id=study_id,
                detail={"comment": comment or "", "dice": {str(a.series_id): a.dice for a in approved}},
            )
        )
    return queued


def reject(
    services: NodeServices, study_id: int, operator: str, reason: str, study_uid: str | None = None
) -> dict[str, Any]:
    """Reject a study's drafts with a reason; nothing is exported or learned."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidLabels("a rejection needs a reason")
    with session_scope(services.engine) as s:
        study = _study(s, study_id)
        check_identity("Study", study.StudyInstanceUID, study_uid)
        if study.state not in (StudyState.PENDING_REVIEW, StudyState.FAILED, StudyState.COMPLETE):
            raise ReviewConflict(f"study {study_id} is {study.state}; it cannot be rejected now")
        set_study_state(s, study, StudyState.REJECTED, reason)
        s.add(AuditEvent(operator=operator, action="reject", study_id=study_id, detail={"reason": reason}))
    services.metrics.studies_rejected.inc()
    return {"state": StudyState.REJECTED.value}


def amend(services: NodeServices, study_id: int, operator: str, reason: str, study_uid: str | None) -> dict[str, Any]:
    """Reopen an approved study for correction: the approved labels become the corrections to start from.

    The next approval makes a new approved SEG that references the one it supersedes; it is written back to
    the PACS and learned like any approval. Refused while the previous approval is still being written back.
    """
    from dicom_node.core.db import Job, JobState

    reason = (reason or "").strip()
    if not reason:
        raise InvalidLabels("an amendment needs a reason")
    with session_scope(services.engine) as s:
        study = _study(s, study_id)
        check_identity("Study", study.StudyInstanceUID, study_uid)
        if study.state not in (StudyState.APPROVED, StudyState.EXPORTED):
            raise ReviewConflict(f"study {study_id} is {study.state}; only an approved study can be amended")
        pending = [
            j.id
            for j in s.scalars(select(Job).where(Job.kind == "export", Job.state != JobState.DONE))
            if int(j.payload.get("study_id", -1)) == study_id
        ]
        if pending:
            raise ReviewConflict(
                f"the approval of study {study_id} is still being written back (job {pending[0]}); amend it once "
                "it is exported, or after a person dealt with that job"
            )
        reopened = []
        for se in study.series:
            result = s.scalar(select(SeriesResult).where(SeriesResult.series_id == se.id))
            if result is None or result.approved_seg_path is None:
                continue
            labels = result.approved_labels_path or result.corrected_labels_path or result.draft_labels_path
            path = services.result_dir(study_id, se.id) / "corrected_labels.npy"
            write_atomic(path, services.path(labels).read_bytes())  # start from what was approved
            result.corrected_labels_path = services.stored(path)
            result.corrected_by = operator
            result.corrected_at = utcnow()
            result.superseded_seg_path = result.approved_seg_path
            reopened.append(se.id)
        set_study_state(s, study, StudyState.PENDING_REVIEW)
        services.events.study_changed(s, study)
        s.add(
            AuditEvent(
                operator=operator, action="amend", study_id=study_id, detail={"reason": reason, "series": reopened}
            )
        )
    return {"state": StudyState.PENDING_REVIEW.value, "dice": {}, "jobs": []}


def derived_uid(approval_uid: str, purpose: str) -> str:
    """A UID that is always the same for one approval and one purpose (a rebuilt SEG resent after a crash
    keeps its SOP Instance UID, so the PACS keeps one copy)."""
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'laurel:{approval_uid}:{purpose}').int}"


def rebuild_approved_seg(services: NodeServices, path: Path, seg_type: str) -> Path:
    """The approved SEG of ``path``'s series built again as ``seg_type`` from the approval's labels snapshot.

    Used by the export job when the configured type changed since the approval, or when a peer refuses
    LABELMAP. Same approval and type: same UIDs and the same file (written once).
    """
    from dicom_node.dicom.seg import build_seg, seg_to_bytes
    from dicom_node.dicom.volume import load_series

    series_id = int(path.parent.name)
    with session_scope(services.engine) as s:
        series, result = _series_result(s, series_id)
        if result.approved_seg_sop_uid is None:
            raise ReviewConflict(f"series {series_id} has no approval to rebuild")
        approval = result.approved_seg_sop_uid
        labels_path = result.approved_labels_path or result.corrected_labels_path or result.draft_labels_path
        labels = load_npy(services.path(labels_path))
        operator = result.approved_by or "Unknown^Operator"
        model_name, model_revision = result.model, result.model_revision
        paths = services.instance_paths(series)
        folder = services.result_dir(series.study_id, series_id)
    sop_uid = derived_uid(approval, f"seg:{seg_type}")
    target = folder / f"approved_seg-{sop_uid}.dcm"
    if target.exists():
        return target
    pkg = services.registry.package(services.registry.revision(model_name, model_revision))
    seg = build_seg(
        load_series(paths),
        labels,
        pkg.region,
        draft=False,
        algorithm_name=pkg.name,
        algorithm_version=pkg.version,
        operator=operator if "^" in operator else f"{operator}^",
        seg_type=seg_type,  # type: ignore[arg-type]
        series_number=APPROVED_SERIES_NUMBER,
        series_instance_uid=derived_uid(approval, f"series:{seg_type}"),
        sop_instance_uid=sop_uid,
        label_table=pkg.labels,
    )
    write_atomic(target, seg_to_bytes(seg))
    logger.info("series %s: approved SEG rebuilt as %s for the write-back", series_id, seg_type)
    return target


def request_resegment(services: NodeServices, series_id: int, operator: str, series_uid: str | None) -> dict[str, Any]:
    """A person asks for a new draft over every image of a series (e.g. after late instances); audited."""
    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        if series is None:
            raise NotFound(f"series {series_id} does not exist")
        check_identity("Series", series.SeriesInstanceUID, series_uid)
        if series.model is None:
            raise ReviewConflict(f"series {series_id} is not routed to a model; there is nothing to segment")
        study = _study(s, series.study_id)
        if study.state not in (StudyState.PENDING_REVIEW, StudyState.FAILED):
            raise ReviewConflict(f"study {study.id} is {study.state}; only a study awaiting review can be re-segmented")
        job = jobs.enqueue(
            s,
            "resegment",
            {"series_id": series_id, "operator": operator},
            dedupe_key=f"resegment:{series_id}:{utcnow().isoformat()}",
        )
        return {"series_id": series_id, "job": job.id}


def mark_exported_if_done(
    s: Session, study_id: int, *, running_job_id: int | None = None, events: Events | None = None
) -> None:
    """After an export job: the study is EXPORTED once every export job of it is done (``study.exported``)."""
    from dicom_node.core.db import Job, JobState

    pending = s.scalars(select(Job).where(Job.kind == "export", Job.state != JobState.DONE)).all()
    if any(int(j.payload.get("study_id", -1)) == study_id and j.id != running_job_id for j in pending):
        return
    study = s.get(Study, study_id)
    if study is not None and study.state == StudyState.APPROVED:
        set_study_state(s, study, StudyState.EXPORTED)
        if events is not None:
            events.study_changed(s, study)
