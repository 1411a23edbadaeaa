"""``/api/v1/updates``: upload learned weights (202 + update id) and follow them through the queue.

An upload is a multipart form with two parts: ``weights`` (an ``.npz`` of float arrays ``w0000``, ``w0001``,
… in the model's weight order, read without unpickling) and ``metadata`` (JSON with exactly the keys
``model``, ``base_version``, ``n_slices``, ``local_dice``, ``client_version``). Everything that can be
checked cheaply is checked before the 202: the key (401, before a byte of the body is read; 429 after too
many failures), the site's concurrent uploads (429), the metadata (422), the permission (403), the base
version (422), the arrays' count, shapes and dtypes from their headers, then their finiteness (422).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect

from federation.server.auth import SiteInfo
from federation.server.deps import CurrentSite, State, check_model_access
from federation.server.limits import TooManyRequests, retry_after_headers
from federation.server.registry import Conflict, NotFound, UpdateInfo
from federation.server.schemas import UpdateAccepted, UpdateList, UpdateMetadata, UpdateStatus
from federation.server.weights import WeightsError, check_weights, read_weights

log = logging.getLogger(__name__)

UNPROCESSABLE = 422  # the name of this status changed between Starlette versions

router = APIRouter(prefix="/api/v1/updates", tags=["updates"])


def status_out(u: UpdateInfo) -> UpdateStatus:
    """The API form of an update."""
    return UpdateStatus(
        update_id=u.uid,
        model=u.model,
        base_version=u.base_version,
        state=u.state,
        version=u.version,
        reason=u.reason,
        candidate_dice=u.candidate_dice,
        merged_dice=u.merged_dice,
        current_dice=u.current_dice,
        staleness=u.staleness,
        n_slices=u.n_slices,
        local_dice=u.local_dice,
        created_at=u.created_at,
        started_at=u.started_at,
        finished_at=u.finished_at,
    )


def parse_metadata(text: str) -> UpdateMetadata:
    """The metadata part, or 422 naming each problem (unknown keys included)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(UNPROCESSABLE, f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise HTTPException(UNPROCESSABLE, "metadata must be a JSON object")
    try:
        return UpdateMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'metadata'}: "
            + (
                "key not allowed (allowed: model, base_version, n_slices, local_dice, client_version)"
                if e["type"] == "extra_forbidden"
                else e["msg"]
            )
            for e in exc.errors()
        )
        raise HTTPException(UNPROCESSABLE, f"invalid metadata: {problems}") from exc


def _refuse(state: State, code: int, detail: str) -> HTTPException:
    state.metrics.upload_refusals.labels(status=str(code)).inc()
    return HTTPException(code, detail)


_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["weights", "metadata"],
                    "properties": {
                        "weights": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npz of float arrays w0000, w0001, … (no pickles)",
                        },
                        "metadata": {
                            "type": "string",
                            "description": "JSON: model, base_version, n_slices, local_dice, client_version",
                        },
                    },
                }
            }
        },
    }
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=UpdateAccepted, openapi_extra=_UPLOAD_FORM)
async def upload_update(
    request: Request,
    state: State,
    site: CurrentSite,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=r"^[A-Za-z0-9_-]{8,64}$",
            description="a retry with the same key returns the same update instead of queueing it twice",
        ),
    ] = None,
) -> UpdateAccepted:
    """Queue an update for validation and merging; 202 with the id to poll.

    The body is read only after the key was checked (the route declares no body parameters, so FastAPI
    parses nothing before its dependencies) and while the site holds one of its upload slots (429 without).
    """
    try:
        with state.upload_slots.hold(site.id, site.name):
            form, weights, metadata = await _read_form(request, state)
            try:
                return await run_in_threadpool(_accept, state, site, weights, metadata, idempotency_key)
            finally:
                await form.close()
    except TooManyRequests as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers=retry_after_headers(exc)) from exc


async def _read_form(request: Request, state: State) -> tuple[FormData, UploadFile, str]:
    """The two parts of the upload form (files spool to disk past 1 MiB); 422 saying what is missing."""
    try:
        form = await request.form(max_files=1, max_fields=1, max_part_size=64 * 1024)
    except ClientDisconnect as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the upload ended before its body was complete") from exc
    weights, metadata = form.get("weights"), form.get("metadata")
    if not isinstance(weights, UploadFile) or not isinstance(metadata, str):
        await form.close()
        raise _refuse(
            state,
            UNPROCESSABLE,
            "send a multipart form with a file part 'weights' (the .npz) and a field 'metadata' (JSON)",
        )
    return form, weights, metadata


def _accept(
    state: State, site: SiteInfo, weights: UploadFile, metadata: str, idempotency_key: str | None
) -> UpdateAccepted:
    """Check and queue one received upload (blocking: runs in the thread pool)."""
    meta = parse_metadata(metadata)
    try:
        check_model_access(state, site, meta.model)
    except HTTPException as exc:
        raise _refuse(state, exc.status_code, str(exc.detail)) from exc
    try:
        base = state.registry.version(meta.model, meta.base_version)
    except NotFound as exc:
        latest = state.registry.latest(meta.model)
        raise _refuse(
            state,
            UNPROCESSABLE,
            f"base_version {meta.base_version} of {meta.model} does not exist "
            f"(latest: {None if latest is None else latest.version})",
        ) from exc
    limit = int(state.config.server.max_upload_mb * 2**20)
    data = weights.file.read(limit + 1)
    if len(data) > limit:
        raise _refuse(state, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"weights exceed {limit} bytes")
    try:
        # count, shapes and dtypes from the zip directory and the .npy headers before any array data
        arrays = read_weights(data, max_bytes=int(state.config.server.max_weights_mb * 2**20), specs=base.weight_specs)
        check_weights(arrays, base.weight_specs)
    except WeightsError as exc:
        log.info("upload from site %s refused: %s", site.name, exc)
        raise _refuse(state, UNPROCESSABLE, f"invalid weights: {exc}") from exc
    del arrays
    try:
        update = state.registry.add_update(
            model=meta.model,
            site_id=site.id,
            base_version=meta.base_version,
            n_slices=meta.n_slices,
            local_dice=meta.local_dice,
            client_version=meta.client_version,
            weights=data,
            idempotency_key=idempotency_key,
        )
    except Conflict as exc:
        raise _refuse(state, status.HTTP_409_CONFLICT, str(exc)) from exc
    state.metrics.uploads.labels(model=meta.model).inc()
    state.queue.notify()
    log.info("update %s queued (site %s, %s base %d)", update.uid, site.name, meta.model, meta.base_version)
    return UpdateAccepted(
        update_id=update.uid,
        state=update.state,  # QUEUED, or where a retried upload stands
        status_url=f"/api/v1/updates/{update.uid}",
    )


@router.get("/{update_id}", response_model=UpdateStatus)
def update_status(state: State, site: CurrentSite, update_id: str) -> UpdateStatus:
    """Where one of this site's updates stands: QUEUED, VALIDATING, ACCEPTED (version), REJECTED (reason)."""
    try:
        update = state.registry.get_update(update_id)
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no update {update_id!r}") from exc
    if update.site_id != site.id:  # other sites' updates are not ours to show
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no update {update_id!r}")
    return status_out(update)


@router.get("", response_model=UpdateList)
def list_updates(
    state: State,
    site: CurrentSite,
    model: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UpdateList:
    """This site's updates, newest first."""
    return UpdateList(
        updates=[status_out(u) for u in state.registry.list_updates(model=model, site_id=site.id, limit=limit)]
    )
