"""What one client may cost the federation server before it is trusted: body sizes, failed logins, uploads.

* :class:`BodyLimit` (ASGI middleware): a body larger than its path's limit is refused with 413 before the
  app reads it — from ``Content-Length`` when declared, else while a chunked body streams in (counted as it
  arrives, refused at the first byte over the limit). The upload route authenticates before it reads its
  body, so an unauthenticated upload costs its headers only: an answer given before the body was read
  closes the connection (``Connection: close``), so the rest of the body is never read off the socket.
* :class:`FailureLimiter`: failed authentications are counted per key prefix and per client address in a
  sliding window; past ``max_failures`` the server answers 429 with ``Retry-After`` without running argon2,
  so a known prefix cannot make it hash without bound. A key verified recently (the cache of
  :class:`federation.server.auth.SiteKeys`) still gets in.
* :class:`UploadSlots`: at most ``n`` uploads of one site are received at the same time (429 otherwise).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class TooManyRequests(Exception):
    """Refused for now (HTTP 429); ``retry_after`` says in how many seconds to try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class BodyLimit:
    """Refuse request bodies over the limit of their path (413) before the app reads or parses them."""

    def __init__(self, app: ASGIApp, *, default: int, by_path: Mapping[str, int]) -> None:
        self.app = app
        self.default = default
        self.by_path = dict(by_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS", "DELETE"}:
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope["path"].rstrip("/"), self.default)
        headers = {k.lower(): v for k, v in scope["headers"]}
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > limit:
                await _answer(send, 413, f"request body of {int(declared)} bytes exceeds {limit} bytes")
                return
        state = {"received": 0, "refused": False, "started": False, "complete": False}

        async def capped_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["complete"] = not message.get("more_body", False)
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["refused"] = True
                    log.info(
                        "a request body was refused while streaming: read %d bytes, limit %d", state["received"], limit
                    )
                    if not state["started"]:
                        await _answer(send, 413, f"request body exceeds {limit} bytes (stopped reading there)")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # our 413 went out; the app's answer to the disconnect is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
                if not state["complete"]:  # answered before the body was read (401, 429…): close, read no more
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class FailureLimiter:
    """Failed authentications per key prefix and per client address, in a sliding window (thread-safe).

    At most ``max_tracked`` keys are remembered (the oldest are forgotten first), so rotating addresses or
    prefixes cannot grow the server's memory without bound.
    """

    def __init__(self, max_failures: int, window_seconds: float, *, max_tracked: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_tracked = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(prefix: str | None, address: str | None) -> list[str]:
        return [k for k in (f"prefix:{prefix}" if prefix else None, f"addr:{address}" if address else None) if k]

    def check(self, prefix: str | None, address: str | None) -> None:
        """``TooManyRequests`` when the prefix or the address failed too often within the window."""
        now = time.monotonic()
        with self._lock:
            for key in self._keys(prefix, address):
                times = self._failures.get(key)
                if times is None:
                    continue
                while times and now - times[0] > self.window:
                    times.popleft()
                if len(times) >= self.max_failures:
                    what = "this key prefix" if key.startswith("prefix:") else "this address"
                    raise TooManyRequests(
                        f"too many failed authentications for {what}; try again later", times[0] + self.window - now
                    )

    def failed(self, prefix: str | None, address: str | None) -> None:
        """Count one failed authentication."""
        now = time.monotonic()
        with self._lock:
            for key in self._keys(prefix, address):
                times = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
                times.append(now)
                self._failures[key] = times  # most recent last
            while len(self._failures) > self.max_tracked:
                self._failures.popitem(last=False)


class UploadSlots:
    """At most ``per_site`` uploads of one site at the same time."""

    def __init__(self, per_site: int) -> None:
        self.per_site = per_site
        self._active: dict[int, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, site_id: int, site_label: str) -> Iterator[None]:
        """Hold one of the site's slots while the body is received and checked; ``TooManyRequests`` if none."""
        with self._lock:
            active = self._active.get(site_id, 0)
            if active >= self.per_site:
                raise TooManyRequests(
                    f"site {site_label} already has {active} upload(s) in progress (limit {self.per_site}); "
                    "send the next one when one of them is answered",
                    5,
                )
            self._active[site_id] = active + 1
        try:
            yield
        finally:
            with self._lock:
                self._active[site_id] -= 1
                if not self._active[site_id]:
                    del self._active[site_id]

    def active(self, site_id: int) -> int:
        """Uploads of the site in progress now."""
        with self._lock:
            return self._active.get(site_id, 0)


def retry_after_headers(exc: TooManyRequests) -> dict[str, Any]:
    """The headers of a 429."""
    return {"Retry-After": str(exc.retry_after)}
