"""The node's HTTP API: the review queue, jobs, models, health and metrics (FastAPI).

Routes are thin: they parse, call one function of the workflow modules, and map domain errors to 4xx.
Blocking work (volumes, SEGs, models) runs in FastAPI's thread pool (plain ``def`` routes), never in the
event loop.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dicom_node.api import console
from dicom_node.api.routers import admin, config, series, studies
from dicom_node.core.config_changes import ConfigChangeError
from dicom_node.core.metrics import CONTENT_TYPE
from dicom_node.work.learning import RegistryError
from dicom_node.work.review import InvalidLabels, NotFound, ReviewConflict
from dicom_node.work.services import NodeServices


def create_app(services: NodeServices) -> FastAPI:
    """The API app bound to one running node."""
    app = FastAPI(
        title="Laurel node API",
        version="1",
        description="Review queue of AI muscle segmentations: worklist, volumes, labels, decisions.",
    )
    app.state.services = services

    @app.exception_handler(NotFound)
    def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ReviewConflict)
    def _conflict(_request: Request, exc: ReviewConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(InvalidLabels)
    def _invalid(_request: Request, exc: InvalidLabels) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RegistryError)
    def _registry(_request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConfigChangeError)
    def _config_refused(_request: Request, exc: ConfigChangeError) -> JSONResponse:
        return JSONResponse({"detail": f"configuration refused: {exc}", **exc.as_dict()}, status_code=422)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, object]:
        """Liveness and the node's identity (no auth)."""
        return {"status": "ok", "ae_title": services.config.node.ae_title, "port": services.config.node.port}

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        """Prometheus metrics (no auth)."""
        from dicom_node.core.db import session_scope

        with session_scope(services.engine) as session:
            services.metrics.refresh(session)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    app.include_router(studies.router, prefix="/api/v1")
    app.include_router(series.router, prefix="/api/v1")
    app.include_router(admin.router, prefix="/api/v1")
    app.include_router(config.router, prefix="/api/v1")
    console.install(app)
    return app
