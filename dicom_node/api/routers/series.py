"""``/series``: pixels with geometry, draft and corrected labels, segment catalogue."""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from dicom_node.api.deps import DbSession, Operator, RowId, Services
from dicom_node.api.schemas import ResegmentRequest
from dicom_node.core.db import Series
from dicom_node.core.review_tables import SeriesResult
from dicom_node.work import review
from dicom_node.work.pipeline import npy_bytes

router = APIRouter(tags=["series"])

NPY = "application/x-npy"
MAX_LABEL_BYTES = 512 * 1024 * 1024


def _series(session: DbSession, series_id: int) -> Series:
    series = session.get(Series, series_id)
    if series is None:
        raise review.NotFound(f"series {series_id} does not exist")
    return series


@router.get("/series/{series_id}/volume", response_class=Response)
def volume(series_id: RowId, session: DbSession, services: Services, _operator: Operator) -> Response:
    """The series as a float32 .npy volume ``(z, y, x)``; geometry in the X-Laurel-* headers."""
    from dicom_node.dicom.volume import UnsupportedSeries, load_series

    series = _series(session, series_id)
    try:
        vol = load_series(services.instance_paths(series))
    except UnsupportedSeries as exc:
        raise review.ReviewConflict(f"series {series_id} cannot be shown as a volume: {exc}") from exc
    headers = {
        "X-Laurel-Spacing": ",".join(f"{v:.6g}" for v in vol.spacing),
        "X-Laurel-Origin": ",".join(f"{v:.6g}" for v in vol.origin),
        "X-Laurel-Orientation": ",".join(f"{v:.6g}" for v in vol.orientation),
    }
    return Response(npy_bytes(vol.array.astype(np.float32)), media_type=NPY, headers=headers)


@router.get("/series/{series_id}/labels", response_class=Response)
def labels(
    series_id: RowId,
    services: Services,
    _operator: Operator,
    version: Literal["draft", "corrected", "current"] = Query("current"),
) -> Response:
    """Labels (uint8 .npy, ``(z, y, x)``): the draft, the correction, or the current one."""
    return Response(npy_bytes(review.current_labels(services, series_id, version)), media_type=NPY)


@router.put("/series/{series_id}/labels")
async def put_labels(
    series_id: RowId,
    request: Request,
    services: Services,
    operator: Operator,
    series_uid: str | None = Query(
        None, alias="SeriesInstanceUID", max_length=64, description="the series the client has open; 409 otherwise"
    ),
) -> dict[str, Any]:
    """Save corrected labels (a uint8 .npy ``(z, y, x)`` of the draft's shape) without approving."""
    body = await request.body()
    if len(body) > MAX_LABEL_BYTES:
        raise review.InvalidLabels("the label volume is larger than 512 MiB")
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise review.InvalidLabels(
            f"the body is not a .npy array ({exc}); send np.save(buf, labels.astype(np.uint8))"
        ) from exc
    from starlette.concurrency import run_in_threadpool

    result: dict[str, Any] = await run_in_threadpool(
        review.put_labels, services, series_id, array, operator, series_uid
    )
    return result


@router.post("/series/{series_id}/resegment")
def resegment(series_id: RowId, body: ResegmentRequest, services: Services, operator: Operator) -> dict[str, Any]:
    """A new draft over every image of the series (e.g. after late instances); saved corrections are set aside."""
    return review.request_resegment(services, series_id, operator, body.SeriesInstanceUID)


@router.get("/series/{series_id}/segments")
def segments(series_id: RowId, session: DbSession, services: Services, _operator: Operator) -> dict[str, Any]:
    """The label values of the series' model with names, sides, colours and SNOMED CT codes."""
    _series(session, series_id)
    from sqlalchemy import select

    result = session.scalar(select(SeriesResult).where(SeriesResult.series_id == series_id))
    if result is None:
        raise review.ReviewConflict(f"series {series_id} has no draft segmentation")
    pkg = services.registry.package(services.registry.revision(result.model, result.model_revision))
    return {"model": pkg.name, "version": pkg.version, "segments": list(pkg.labels)}
