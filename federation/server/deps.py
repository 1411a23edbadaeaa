"""FastAPI dependencies: the server state, the authenticated site, model access (``Annotated`` aliases)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from federation.server.auth import SiteInfo, SiteKeys
from federation.server.config import FederationConfig
from federation.server.limits import FailureLimiter, TooManyRequests, UploadSlots, retry_after_headers
from federation.server.metrics import FederationMetrics
from federation.server.processing import Processor
from federation.server.pseudonyms import SiteLabels
from federation.server.queue import UpdateQueue
from federation.server.registry import Registry
from federation.server.signing import ServerKey

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="laurel-federation"'}


@dataclass
class ServerState:
    """Everything the routes need, built by :func:`federation.server.app.create_app`."""

    config: FederationConfig
    registry: Registry
    keys: SiteKeys
    server_key: ServerKey
    processor: Processor
    queue: UpdateQueue
    metrics: FederationMetrics
    labels: SiteLabels
    limiter: FailureLimiter
    upload_slots: UploadSlots


def get_state(request: Request) -> ServerState:
    """The app's state."""
    state: ServerState = request.app.state.laurel
    return state


State = Annotated[ServerState, Depends(get_state)]


def current_site(request: Request, state: State) -> SiteInfo:
    """The site whose key is in ``Authorization: Bearer …``; 401 without, with a bad or a revoked key;
    429 (``Retry-After``) while the key's prefix or the client's address failed too often.

    Keys in the query string are refused (they end up in access logs and browser histories).
    """
    if any(k.lower() in {"key", "api_key", "apikey", "token", "access_token"} for k in request.query_params):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "API keys are accepted only in the Authorization header (Bearer), never in the URL",
            headers=_UNAUTHORIZED,
        )
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key from laurel federation add-site>'",
            headers=_UNAUTHORIZED,
        )
    address = request.client.host if request.client is not None else None
    try:
        site = state.keys.authenticate(key.strip(), limiter=state.limiter, address=address)
    except TooManyRequests as exc:
        state.metrics.auth_throttled.inc()
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers=retry_after_headers(exc)) from exc
    if site is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key", headers=_UNAUTHORIZED)
    return site


CurrentSite = Annotated[SiteInfo, Depends(current_site)]


def check_model_access(state: ServerState, site: SiteInfo, model: str) -> None:
    """403 when the site may not use ``model``; 404 when the model does not exist."""
    if not site.may_use(model):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"site {site.name} has no permission for model {model!r}")
    if model not in state.registry.model_names():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model named {model!r}")


def allowed_model(
    state: State,
    site: CurrentSite,
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")],
) -> str:
    """The ``{name}`` path parameter, checked against the site's permissions."""
    check_model_access(state, site, name)
    return name


AllowedModel = Annotated[str, Depends(allowed_model)]
