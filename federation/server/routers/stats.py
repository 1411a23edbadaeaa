"""``/api/v1/stats``: sites report usage statistics (Dice of the draft against the approved result)."""

from __future__ import annotations

import statistics
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from federation.server.deps import CurrentSite, State, check_model_access
from federation.server.registry import NotFound
from federation.server.schemas import UsageIn, UsageList, UsageOut, UsageSummary

UNPROCESSABLE = 422  # the name of this status changed between Starlette versions

router = APIRouter(prefix="/api/v1/stats", tags=["stats"])


@router.post("", status_code=status.HTTP_201_CREATED)
def post_stats(state: State, site: CurrentSite, body: UsageIn) -> dict[str, str]:
    """Record one usage statistic for a model version this site may use."""
    check_model_access(state, site, body.model)
    try:
        state.registry.version(body.model, body.version)
    except NotFound as exc:
        raise HTTPException(UNPROCESSABLE, str(exc)) from exc
    state.registry.add_usage(
        site_id=site.id,
        model=body.model,
        version=body.version,
        dice=body.dice,
        n_slices=body.n_slices,
        client_version=body.client_version,
    )
    state.metrics.usage_reports.labels(model=body.model).inc()
    return {"status": "recorded"}


@router.get("", response_model=UsageList)
def list_stats(
    state: State,
    site: CurrentSite,
    model: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> UsageList:
    """Usage statistics of the models this site may use (all sites' reports), with per-model summaries."""
    if model is not None:
        check_model_access(state, site, model)
    rows = [u for u in state.registry.list_usage(model=model, limit=limit) if site.may_use(u.model)]
    by_model: dict[str, list[float]] = {}
    for u in rows:
        by_model.setdefault(u.model, []).append(u.dice)
    return UsageList(
        stats=[
            UsageOut(
                site=state.labels.label(u.site),  # a pseudonym unless dashboard.show_site_names
                model=u.model,
                version=u.version,
                dice=u.dice,
                n_slices=u.n_slices,
                created_at=u.created_at,
            )
            for u in rows
        ],
        summary=[
            UsageSummary(model=m, count=len(v), median_dice=statistics.median(v), mean_dice=statistics.fmean(v))
            for m, v in sorted(by_model.items())
        ],
    )
