"""``/api/v1/models``: list models, a model's versions and Dice history, download a signed package."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from federation.server.deps import AllowedModel, CurrentSite, State
from federation.server.registry import NotFound, VersionInfo
from federation.server.schemas import DicePoint, ModelInfo, ModelList, ModelSummary, VersionOut

router = APIRouter(prefix="/api/v1/models", tags=["models"])

PACKAGE_MEDIA_TYPE = "application/vnd.laurel.model-package"


def version_out(v: VersionInfo) -> VersionOut:
    """The API form of a version."""
    per_case = v.dice_detail.get("per_case", {})
    return VersionOut(
        version=v.version,
        parent_version=v.parent_version,
        sha256=v.sha256,
        size=v.size,
        dice=v.dice,
        created_at=v.created_at,
        strategy=v.strategy,
        merged_updates=v.merged_updates,
        per_case_dice={str(k): float(x) for k, x in per_case.items()} if isinstance(per_case, dict) else {},
    )


def _summary(state: State, name: str) -> ModelSummary:
    latest = state.registry.latest(name)
    return ModelSummary(
        name=name,
        region=state.registry.model_region(name),
        latest_version=None if latest is None else latest.version,
        sha256=None if latest is None else latest.sha256,
        dice=None if latest is None else latest.dice,
    )


@router.get("", response_model=ModelList)
def list_models(state: State, site: CurrentSite) -> ModelList:
    """The models this site may use, with their latest version."""
    return ModelList(models=[_summary(state, n) for n in state.registry.model_names() if site.may_use(n)])


@router.get("/{name}", response_model=ModelInfo)
def model_info(state: State, name: AllowedModel) -> ModelInfo:
    """Latest version, every version (sha256, parent, merged updates) and the validation Dice history."""
    versions = state.registry.versions(name)
    summary = _summary(state, name)
    return ModelInfo(
        **summary.model_dump(),
        versions=[version_out(v) for v in versions],
        dice_history=[DicePoint(version=v.version, dice=v.dice, created_at=v.created_at) for v in versions],
    )


@router.get("/{name}/versions/{version}", response_model=VersionOut)
def version_info(state: State, name: AllowedModel, version: Annotated[int, Path(ge=0)]) -> VersionOut:
    """One version's record."""
    try:
        return version_out(state.registry.version(name, version))
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/{name}/versions/{version}/package", response_class=Response)
def download_package(state: State, name: AllowedModel, version: Annotated[int, Path(ge=0)]) -> Response:
    """The version's package as a signed envelope; verify it with the server's public key before loading."""
    try:
        info = state.registry.version(name, version)
        data = state.registry.packages.get(info.sha256)
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return Response(
        content=data,
        media_type=PACKAGE_MEDIA_TYPE,
        headers={
            "X-Laurel-Sha256": info.sha256,
            "X-Laurel-Version": str(info.version),
            "Content-Disposition": f'attachment; filename="{name}-v{info.version}.laurel"',
        },
    )
