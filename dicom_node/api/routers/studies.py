"""``/studies``: the worklist, a study's detail, approve and reject."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from dicom_node.api.deps import DbSession, Operator, RowId, Services
from dicom_node.api.schemas import (
    AmendRequest,
    ApproveRequest,
    DecisionResponse,
    ModelRef,
    RejectRequest,
    SeriesSummary,
    StudyDetail,
    StudyList,
    StudySummary,
)
from dicom_node.core.db import Instance, Series, Study, StudyState
from dicom_node.core.review_tables import SeriesResult
from dicom_node.work import review

router = APIRouter(tags=["studies"])


def _iso(value: object) -> str | None:
    return None if value is None else value.isoformat() + "Z"  # type: ignore[attr-defined]


def _latest(results: Sequence[SeriesResult], stamp: str) -> SeriesResult | None:
    """The series result with the newest ``stamp`` (corrected_at, approved_at), if any has one."""
    stamped = [r for r in results if getattr(r, stamp) is not None]
    return max(stamped, key=lambda r: getattr(r, stamp)) if stamped else None


def summarise(session: DbSession, study: Study) -> StudySummary:
    """The worklist row of a study."""
    counts = dict(
        session.execute(
            select(Series.id, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id, isouter=True)
            .where(Series.study_id == study.id)
            .group_by(Series.id)
        ).all()
    )
    results = session.scalars(
        select(SeriesResult).join(Series, Series.id == SeriesResult.series_id).where(Series.study_id == study.id)
    ).all()
    models = sorted({(r.model, r.model_version) for r in results})
    corrected = _latest(results, "corrected_at")
    approved = _latest(results, "approved_at")
    return StudySummary(
        id=study.id,
        StudyInstanceUID=study.StudyInstanceUID,
        PatientName=study.PatientName,
        PatientID=study.PatientID,
        StudyDescription=study.StudyDescription,
        StudyDate=study.StudyDate,
        state=study.state,
        failure_reason=study.failure_reason,
        received_at=_iso(study.received_at),
        completed_at=_iso(study.completed_at),
        in_progress_by=corrected.corrected_by
        if corrected is not None and study.state == StudyState.PENDING_REVIEW
        else None,
        approved_by=approved.approved_by if approved is not None else None,
        approved_at=_iso(approved.approved_at) if approved is not None else None,
        series_count=len(counts),
        instance_count=int(sum(counts.values())),
        models=[ModelRef(name=m, version=v) for m, v in models],
    )


@router.get("/studies", response_model=StudyList)
def list_studies(
    session: DbSession,
    _operator: Operator,
    state: StudyState | None = Query(None, description="only studies in this state, e.g. PENDING_REVIEW"),
    order: Literal["newest", "oldest"] = Query("newest", description="by received time"),
    limit: int = Query(200, ge=1, le=2000),
    offset: int = Query(0, ge=0, le=2**31),
) -> StudyList:
    """The worklist by received time (newest first unless ``order=oldest``), a page of ``limit`` from ``offset``."""
    received = Study.received_at.asc() if order == "oldest" else Study.received_at.desc()
    query = select(Study).order_by(received, Study.id).offset(offset).limit(limit)
    if state is not None:
        query = query.where(Study.state == state)
    return StudyList(studies=[summarise(session, st) for st in session.scalars(query)])


@router.get("/studies/{study_id}", response_model=StudyDetail)
def study_detail(study_id: RowId, session: DbSession, _operator: Operator) -> StudyDetail:
    """A study with its series, their models, states and drafts."""
    study = session.get(Study, study_id)
    if study is None:
        raise review.NotFound(f"study {study_id} does not exist")
    results = {
        r.series_id: r
        for r in session.scalars(select(SeriesResult).where(SeriesResult.series_id.in_([se.id for se in study.series])))
    }
    series = []
    for se in study.series:
        res = results.get(se.id)
        series.append(
            SeriesSummary(
                id=se.id,
                SeriesInstanceUID=se.SeriesInstanceUID,
                SeriesNumber=se.SeriesNumber,
                SeriesDescription=se.SeriesDescription,
                Modality=se.Modality,
                instance_count=len(se.instances),
                model=se.model,
                model_version=res.model_version if res else None,
                state=se.state,
                failure_reason=se.failure_reason,
                has_draft=res is not None,
                has_corrected=bool(res and res.corrected_labels_path),
                changed_since_draft=se.changed_since_draft,
                dice=res.dice if res else None,
            )
        )
    return StudyDetail(**summarise(session, study).model_dump(), series=series)


@router.post("/studies/{study_id}/approve", response_model=DecisionResponse)
def approve(study_id: RowId, body: ApproveRequest, services: Services, operator: Operator) -> DecisionResponse:
    """Approve the study's (corrected) segmentations: approved SEGs go to the PACS, the model learns."""
    return DecisionResponse(**review.approve(services, study_id, operator, body.comment, body.StudyInstanceUID))


@router.post("/studies/{study_id}/reject", response_model=DecisionResponse)
def reject(study_id: RowId, body: RejectRequest, services: Services, operator: Operator) -> DecisionResponse:
    """Reject the study's drafts with a reason; nothing is exported or learned."""
    return DecisionResponse(**review.reject(services, study_id, operator, body.reason, body.StudyInstanceUID))


@router.post("/studies/{study_id}/amend", response_model=DecisionResponse)
def amend(study_id: RowId, body: AmendRequest, services: Services, operator: Operator) -> DecisionResponse:
    """Reopen an approved study for correction; its next approval supersedes the approved SEG in the PACS."""
    return DecisionResponse(**review.amend(services, study_id, operator, body.reason, body.StudyInstanceUID))
