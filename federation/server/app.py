"""The federation server's FastAPI app: :func:`create_app` builds it from a :class:`FederationConfig`.

Start-up (the app's lifespan): the registry tables are created, the signing key is loaded (or created),
each configured model is bootstrapped from the zoo if it has no version yet (its validation set is written
from the phantom when empty), and the single update worker starts. Shutdown stops the worker; an update it
was processing is requeued on the next start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from federation.server.auth import SiteKeys
from federation.server.config import FederationConfig
from federation.server.deps import ServerState
from federation.server.limits import BodyLimit, FailureLimiter, UploadSlots
from federation.server.metrics import FederationMetrics
from federation.server.processing import Processor
from federation.server.pseudonyms import SiteLabels, load_or_create_secret
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
        default_contrasts=v.default_contrasts,
    )
    labels = SiteLabels(load_or_create_secret(config.pseudonym_key_path), show_names=config.dashboard.show_site_names)
    processor = Processor(config, registry, server_key, validator, metrics, labels=labels)
    s = config.server
    return ServerState(
        config=config,
        registry=registry,
        keys=SiteKeys(registry),
        server_key=server_key,
        processor=processor,
        queue=UpdateQueue(registry, processor, metrics),
        metrics=metrics,
        labels=labels,
        limiter=FailureLimiter(s.auth_max_failures, s.auth_failure_window_seconds),
        upload_slots=UploadSlots(s.max_concurrent_uploads_per_site),
    )


def create_app(config: FederationConfig, *, start_worker: bool = True) -> FastAPI:
    """The federation server app; ``start_worker=False`` leaves uploads queued (tests of durability)."""
    state = build_state(config)
    upload_limit = int(config.server.max_upload_mb * 2**20) + 2**20  # the weights plus the form overhead

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
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; /openapi.json stays
        redoc_url=None,
        description="Validates, merges and publishes what the sites learn (weights only, never images).",
    )
    app.state.laurel = state

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    # Oversized bodies are refused before the app reads them: Content-Length first, chunked ones as they stream.
    app.add_middleware(
        BodyLimit,
        default=int(config.server.max_request_kb * 1024),
        by_path={"/api/v1/updates": upload_limit},
    )

    for router in (models.router, updates.router, stats.router, dashboard.router):
        app.include_router(router)
    return app


class RedactSecrets(logging.Filter):
    """Blanks key-like query parameters in uvicorn's access log lines (keys are refused in URLs anyway)."""

    _PARAM = re.compile(r"(?i)([?&](?:key|api_key|apikey|token|access_token)=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._PARAM.sub(r"\1REDACTED", a) if isinstance(a, str) else a for a in record.args)
        return True


def tls_options(config: FederationConfig) -> dict[str, Any]:
    """uvicorn's TLS settings (HTTPS served directly) when the configuration names a certificate and key."""
    if config.server.tls_certfile is None or config.server.tls_keyfile is None:
        return {}
    return {"ssl_certfile": str(config.server.tls_certfile), "ssl_keyfile": str(config.server.tls_keyfile)}


def serve(config: FederationConfig) -> None:
    """Run the server with uvicorn until interrupted (``laurel federation serve``)."""
    import uvicorn

    server_config = uvicorn.Config(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        log_level="info",
        timeout_graceful_shutdown=30,
        **tls_options(config),
    )
    if config.server.tls_certfile is None:
        log.warning("serving plain HTTP: set server.tls_certfile and server.tls_keyfile before sites connect")
    logging.getLogger("uvicorn.access").addFilter(RedactSecrets())  # after uvicorn configured logging
    uvicorn.Server(server_config).run()


class BackgroundServer:
    """The federation server in a background thread on a bound socket (tests, benchmarks, the demo).

    ``port=0`` binds a free port; :attr:`url` says which (``https://`` with TLS configured). :meth:`start`
    returns once the socket serves (``/health`` over plain HTTP; a TLS handshake with TLS).
    """

    def __init__(
        self,
        config: FederationConfig,
        *,
        start_worker: bool = True,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        import socket
        import threading

        import uvicorn

        self.config = config
        self.app = create_app(config, start_worker=start_worker)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host or config.server.host, config.server.port if port is None else port))
        self.port = int(self.sock.getsockname()[1])
        scheme = "https" if config.server.tls_certfile is not None else "http"
        self.url = f"{scheme}://{host or config.server.host}:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5, **tls_options(config)
            )
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="federation-http", daemon=True
        )

    @property
    def state(self) -> ServerState:
        """The running app's state (registry, keys, queue...)."""
        state: ServerState = self.app.state.laurel
        return state

    def start(self, timeout: float = 120.0) -> BackgroundServer:
        """Serve; return once ``/health`` answers (``TimeoutError`` / ``RuntimeError`` otherwise)."""
        import time
        import urllib.request

        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the federation server stopped during start-up (see its log)")
            try:
                if self.url.startswith("https://"):
                    if self.server.started:
                        return self
                else:
                    with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:  # noqa: S310 - our URL
                        if resp.status == 200:
                            return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the federation server did not answer /health within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving (idempotent)."""
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(timeout)
        self.sock.close()
