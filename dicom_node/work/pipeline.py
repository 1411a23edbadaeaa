"""The ``segment`` job: a complete study's routed series → volume → model → draft SEG → PENDING_REVIEW.

The draft is kept on the node (never sent anywhere) as ``draft_labels-<SOP UID>.npy`` and
``draft_seg-<SOP UID>.dcm`` in the series' result folder, with a
:class:`~dicom_node.core.review_tables.SeriesResult` row committed after both files are in place (paths relative
to ``storage_dir``). A new draft gets new files and the row switches to them in one commit, so a reader never
sees half of one. Killed at any point, the job runs again: a series that already has its draft row is
skipped, one without it is segmented again.
A series the model cannot take (a single slice, not axial, not MR, unreadable) is marked FAILED with a
sentence a person can read; the study goes to PENDING_REVIEW when at least one series has a draft, else to
FAILED with the reasons of every series. A ``segment`` job that gives up (dead letter) fails its study.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.db import Series, SeriesState, Study, StudyState, session_scope, set_study_state, utcnow
from dicom_node.core.jobs import JobContext, fault_point
from dicom_node.core.review_tables import SeriesResult
from dicom_node.intake.completion import OPEN_STATES
from dicom_node.work.events import Events
from dicom_node.work.learning import atomic_write
from dicom_node.work.services import NodeServices

logger = logging.getLogger(__name__)

#: SeriesNumber of the draft SEGs (approved SEGs use the next hundred), so PACS viewers sort them last.
DRAFT_SERIES_NUMBER = 9100
APPROVED_SERIES_NUMBER = 9200


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, fsync it and rename it into ``path`` (then fsync the folder)."""
    atomic_write(path, data)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as .npy bytes (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_npy(path: Path | str) -> np.ndarray:
    """Read a .npy file the node wrote (``allow_pickle=False``)."""
    return np.load(path, allow_pickle=False)


def segment_study(services: NodeServices, study_id: int, ctx: JobContext | None = None) -> dict[str, Any]:
    """Segment every routed series of a study; returns a summary for the job's result."""
    if ctx is not None:
        fault_point("segment.start", ctx)
    with session_scope(services.engine) as s:
        study = s.get(Study, study_id)
        if study is None:
            raise LookupError(f"study {study_id} does not exist")
        if study.state not in (StudyState.COMPLETE, StudyState.SEGMENTING):
            return {"skipped": f"study is {study.state}"}
        set_study_state(s, study, StudyState.SEGMENTING)
        routed = [se.id for se in study.series if se.model is not None]
        completed_at = study.completed_at
    outcome: dict[str, Any] = {"segmented": [], "failed": {}}
    for series_id in routed:
        reason = _segment_series(services, series_id, ctx)
        if reason is None:
            outcome["segmented"].append(series_id)
        else:
            outcome["failed"][series_id] = reason
    with session_scope(services.engine) as s:
        study = s.get(Study, study_id)
        assert study is not None
        if outcome["segmented"]:
            set_study_state(s, study, StudyState.PENDING_REVIEW)
            services.events.study_changed(s, study)
            if completed_at is not None:
                services.metrics.study_turnaround_seconds.observe(
                    max(0.0, (study.updated_at - completed_at).total_seconds())
                )
        else:
            set_study_state(s, study, StudyState.FAILED, _failure_text(s, study, outcome["failed"]))
            services.events.study_changed(s, study)
    return outcome


def _failure_text(s: Session, study: Study, failed: dict[int, str]) -> str:
    if not failed:
        return "no series of this study matched a routing rule, so no model was applied"
    parts = []
    for series_id, reason in failed.items():
        series = s.get(Series, series_id)
        name = (series.SeriesDescription or f"series {series.SeriesNumber}") if series else str(series_id)
        parts.append(f"{name}: {reason}")
    return "no series could be segmented — " + "; ".join(parts)


def mark_segment_dead(s: Session, payload: dict[str, Any], error: str, events: Events | None = None) -> None:
    """A ``segment`` job gave up: its study is FAILED with the reason (never left SEGMENTING for ever)."""
    study = s.get(Study, int(payload.get("study_id", -1)))
    if study is not None and study.state in (StudyState.COMPLETE, StudyState.SEGMENTING):
        set_study_state(s, study, StudyState.FAILED, f"segmentation gave up: {error}")
        if events is not None:
            events.study_changed(s, study)


def _segment_series(
    services: NodeServices, series_id: int, ctx: JobContext | None = None, *, again: bool = False
) -> str | None:
    """Segment one series (``again``: even if it has a draft); returns ``None`` on success or why it failed."""
    from dicom_node.dicom.seg import build_seg, seg_to_bytes
    from dicom_node.dicom.volume import UnsupportedSeries, load_series

    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        assert series is not None
        if not again and series.state == SeriesState.SEGMENTED and _result(s, series_id) is not None:
            return None
        model_name = series.model
        assert model_name is not None
        drafted_at = utcnow()  # every instance indexed before this moment is in the draft
        paths = services.instance_paths(series)
        study_id = series.study_id
        series.state = SeriesState.SEGMENTING
    started = time.perf_counter()
    try:
        volume = load_series(paths)
    except UnsupportedSeries as exc:
        return _fail_series(services, series_id, model_name, str(exc))
    rev, pkg = services.registry.active(model_name)
    labels = pkg.apply(volume.array, volume.spacing)
    try:
        seg = build_seg(
            volume,
            labels,
            pkg.region,
            draft=True,
            algorithm_name=pkg.name,
            algorithm_version=pkg.version,
            seg_type=services.config.segmentation.seg_type,
            series_number=DRAFT_SERIES_NUMBER,
            label_table=pkg.labels,
        )
    except ValueError as exc:  # highdicom refuses source images a SEG cannot reference (e.g. no FrameOfReferenceUID)
        return _fail_series(services, series_id, model_name, f"no DICOM-SEG can reference these images: {exc}")
    folder = services.result_dir(study_id, series_id)
    uid = str(seg.SOPInstanceUID)  # new names: the previous draft stays whole until the row switches
    labels_file, seg_file = folder / f"draft_labels-{uid}.npy", folder / f"draft_seg-{uid}.dcm"
    write_atomic(labels_file, npy_bytes(labels.astype(np.uint8)))
    write_atomic(seg_file, seg_to_bytes(seg))
    elapsed = time.perf_counter() - started
    if ctx is not None:
        fault_point("segment.after_drafts", ctx)
    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        assert series is not None
        result = _result(s, series_id) or SeriesResult(series_id=series_id)
        previous = [p for p in (result.draft_labels_path, result.draft_seg_path) if p]
        result.model = pkg.name
        result.model_version = pkg.version
        result.model_revision = rev.revision
        result.draft_labels_path = services.stored(labels_file)
        result.draft_seg_path = services.stored(seg_file)
        result.draft_seg_sop_uid = uid
        result.corrected_labels_path = None
        result.corrected_by = None
        result.corrected_at = None
        result.drafted_at = drafted_at
        result.draft_slices = int(labels.shape[0])
        result.segmentation_seconds = elapsed
        s.add(result)
        series.state = SeriesState.SEGMENTED
        series.failure_reason = None
        series.changed_since_draft = False
    for old in previous:  # the row names the new draft now; the old files are no one's
        services.path(old).unlink(missing_ok=True)
    services.metrics.series_segmented.labels(model=model_name, outcome="ok").inc()
    services.metrics.segmentation_seconds.labels(model=model_name).observe(elapsed)
    logger.info("series %s segmented with %s v%s in %.1f s", series_id, pkg.name, pkg.version, elapsed)
    return None


def resegment_series(
    services: NodeServices, series_id: int, ctx: JobContext | None = None, *, operator: str | None = None
) -> dict[str, Any]:
    """A series changed after its draft (late instances), or a person asked: make a new draft over every image.

    Without saved corrections the new draft simply replaces the old one. With corrections, a late arrival only
    marks the series ``changed_since_draft`` (approval is refused until a person decides; the corrections are
    kept); a person's request (``operator``) makes the new draft and keeps the old corrections' file aside
    (audited). A study that had FAILED goes to PENDING_REVIEW when the series now has a draft.
    """
    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        if series is None or series.model is None:
            raise LookupError(f"series {series_id} does not exist or is not routed to a model")
        study = s.get(Study, series.study_id)
        assert study is not None
        if study.state not in OPEN_STATES:
            return {"skipped": f"study {study.id} is {study.state}; its late instances are stored, not segmented"}
        result = _result(s, series_id)
        if result is not None and result.corrected_labels_path is not None and operator is None:
            series.changed_since_draft = True
            logger.warning(
                "series %s received instances after its draft was corrected; approval waits for a re-segmentation",
                series_id,
            )
            return {"changed_since_draft": True, "kept_corrections": True}
        superseded = None
        if result is not None and result.corrected_labels_path is not None:
            # a person asked for a new draft: their corrections of the old one are kept under another name
            old = services.path(result.corrected_labels_path)
            kept = old.with_name(f"corrected_labels-superseded-{result.draft_seg_sop_uid}.npy")
            if old.exists():
                old.replace(kept)
            superseded = services.stored(kept)
            result.corrected_labels_path = None
        study_id = study.id
    reason = _segment_series(services, series_id, ctx, again=True)
    with session_scope(services.engine) as s:
        study = s.get(Study, study_id)
        assert study is not None
        if reason is None and study.state == StudyState.FAILED:
            set_study_state(s, study, StudyState.PENDING_REVIEW)
            services.events.study_changed(s, study)
        if operator is not None:
            from dicom_node.core.review_tables import AuditEvent

            detail = {"series_id": series_id, "superseded_corrections": superseded, "failed": reason}
            s.add(AuditEvent(operator=operator, action="resegment", study_id=study_id, detail=detail))
    return {"series_id": series_id, "segmented": reason is None, "reason": reason}


def _fail_series(services: NodeServices, series_id: int, model_name: str, reason: str) -> str:
    with session_scope(services.engine) as s:
        series = s.get(Series, series_id)
        assert series is not None
        series.state = SeriesState.FAILED
        series.failure_reason = reason
    services.metrics.series_segmented.labels(model=model_name, outcome="failed").inc()
    logger.warning("series %s not segmented: %s", series_id, reason)
    return reason


def _result(s: Session, series_id: int) -> SeriesResult | None:
    return s.scalar(select(SeriesResult).where(SeriesResult.series_id == series_id))
