"""``/dashboard`` (HTML), ``/health`` and ``/metrics``: the server seen by people and by monitoring."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from federation.server.dashboard import render_dashboard
from federation.server.deps import State
from federation.server.schemas import Health

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """The dashboard is the front page."""
    return RedirectResponse("/dashboard")


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(state: State) -> HTMLResponse:
    """Versions over time with validation Dice, accepted and rejected updates, usage statistics."""
    if not state.config.dashboard.enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the dashboard is disabled in the configuration")
    return HTMLResponse(render_dashboard(state))


@router.get("/health", response_model=Health)
def health(state: State) -> Health:
    """Liveness and the latest version of each model (no auth)."""
    models: dict[str, int | None] = {}
    for name in state.registry.model_names():
        latest = state.registry.latest(name)
        models[name] = None if latest is None else latest.version
    worker = state.queue.running
    return Health(
        status="ok" if worker else "degraded",
        worker=worker,
        queue_depth=state.queue.depth(),
        models=models,
        public_key=state.server_key.public_b64(),
    )


@router.get("/metrics")
def metrics(state: State) -> Response:
    """Prometheus text exposition (no auth)."""
    state.metrics.queue_depth.set(state.queue.depth())
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
