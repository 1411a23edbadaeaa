"""The federation server's FastAPI app: :func:`create_app` builds it from a :class:`FederationConfig`.

Start-up (the app's lifespan): the registry tables are created, the signing key is loaded (or created),
each configured model is bootstrapped from the zoo if it has no version yet (its validation set is written
from the phantom when empty), and the single update worker starts. Shutdown stops the worker; an update it
was processing is requeued on the next start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from federation.server.auth import SiteKeys
from federation.server.config import FederationConfig
from federation.server.deps import ServerState
from federation.server.metrics import FederationMetrics
from federation.server.processing import Processor
from federation.server.queue import UpdateQueue
from federation.server.registry import Registry
from federation.server.routers import dashboard, models, stats, updates
from federation.server.signing import load_or_create
from federation.server.tables import make_engine
from federation.server.validation import Validator

log = logging.getLogger(__name__)


def build_state(config: FederationConfig) -> ServerState:
    """Registry, keys, validator, processor and queue for ``config`` (nothing started, nothing validated)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(make_engine(config.db_url), config.data_dir)
    metrics = FederationMetrics()
    server_key = load_or_create(config.signing_key_path)
    v = config.validation
    validator = Validator(
        config.validation_dir,
        default_subjects=v.default_subjects,
        default_slices=v.default_slices,
        default_matrix=v.default_matrix,
    )
    processor = Processor(config, registry, server_key, validator, metrics)
    return ServerState(
        config=config,
        registry=registry,
        keys=SiteKeys(registry),
        server_key=server_key,
        processor=processor,
        queue=UpdateQueue(registry, processor, metrics),
        metrics=metrics,
    )


def create_app(config: FederationConfig, *, start_worker: bool = True) -> FastAPI:
    """The federation server app; ``start_worker=False`` leaves uploads queued (tests of durability)."""
    state = build_state(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        await anyio.to_thread.run_sync(state.processor.bootstrap)
        if start_worker:
            state.queue.start()
        log.info("federation server ready: models %s", ", ".join(state.registry.model_names()) or "none")
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.queue.stop)
            state.registry.engine.dispose()

    app = FastAPI(
        title="Laurel federation server",
        version="1",
        lifespan=lifespan,
        description="Validates, merges and publishes what the sites learn (weights only, never images).",
    )
    app.state.laurel = state

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    for router in (models.router, updates.router, stats.router, dashboard.router):
        app.include_router(router)
    return app


def serve(config: FederationConfig) -> None:
    """Run the server with uvicorn until interrupted (``laurel federation serve``)."""
    import uvicorn

    uvicorn.run(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )
