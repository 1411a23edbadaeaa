"""The ``webhook`` job: one signed POST of an event to one configured receiver, bounded in time and size.

Request: ``Content-Type: application/json``, the body as queued (JSON, keys sorted, so a retry sends the same
bytes), and the headers

* ``X-Laurel-Event``: the event name; ``X-Laurel-Delivery`` and ``Idempotency-Key``: the event id;
* ``X-Laurel-Timestamp``: Unix seconds of this attempt;
* ``X-Laurel-Signature: sha256=<hex>``: HMAC-SHA256 with the webhook's secret over
  ``<timestamp>.<body>``, so a receiver can refuse a replayed delivery (an old timestamp) as well as a forged one.

Bounds: ``connect_timeout_seconds`` to connect, ``read_timeout_seconds`` for each read, and
``total_timeout_seconds`` for the whole delivery (a watchdog shuts the socket down, so a receiver that
trickles its answer byte by byte is cut off too); at most ``max_response_bytes`` of the answer are read.
Redirects are not followed.

Outcome: 2xx delivered; 408, 425, 429, 5xx, timeouts and network errors are retried by the queue (backoff
with jitter, ``max_attempts``, then a dead letter a person can requeue); any other answer (3xx, 4xx) is a
dead letter at once, with the status and the start of the answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from dicom_node.core.config import NodeConfig, Webhook
from dicom_node.core.jobs import Handler, JobContext, PermanentJobError

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 425, 429})
USER_AGENT = "laurel-webhook/1"


class WebhookUnavailable(RuntimeError):
    """The receiver could not be reached or asked to try again later (the job is retried)."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Laurel-Signature`` value: ``sha256=`` + HMAC-SHA256(secret, ``<timestamp>.<body>``)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def secret_of(hook: Webhook) -> bytes:
    """The webhook's secret from its environment variable; ``ValueError`` saying which is empty."""
    value = os.environ.get(hook.secret_env, "")
    if not value:
        raise ValueError(f"webhook {hook.name}: the environment variable {hook.secret_env} (its secret) is empty")
    return value.encode()


def encode_body(body: dict[str, Any]) -> bytes:
    """The bytes sent (and signed): JSON with sorted keys, the same on every attempt."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def deliver(hook: Webhook, event: str, event_id: str, body: bytes, secret: bytes) -> tuple[int, bytes]:
    """POST one event; returns (status, the start of the answer) for 2xx, raises :class:`WebhookUnavailable`
    (retry later) or :class:`PermanentJobError` (this answer will not change)."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Laurel-Event": event,
        "X-Laurel-Delivery": event_id,
        "Idempotency-Key": event_id,
        "X-Laurel-Timestamp": timestamp,
        "X-Laurel-Signature": signature(secret, timestamp, body),
    }
    status, answer = _post(hook, body, headers)
    if 200 <= status < 300:
        return status, answer
    text = answer[:200].decode("utf-8", "replace")
    if status >= 500 or status in _RETRY_STATUS:
        raise WebhookUnavailable(f"webhook {hook.name}: HTTP {status}: {text}")
    raise PermanentJobError(f"webhook {hook.name}: HTTP {status} (not retried): {text}")


def _post(hook: Webhook, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(hook.url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(hook.ca_file) if hook.ca_file else None)
        conn = http.client.HTTPSConnection(host, parts.port, timeout=hook.connect_timeout_seconds, context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=hook.connect_timeout_seconds)
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(hook.total_timeout_seconds, cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(hook.read_timeout_seconds)
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(hook.max_response_bytes)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise WebhookUnavailable(
                f"webhook {hook.name}: no complete answer within {hook.total_timeout_seconds:g} s"
            ) from exc
        raise WebhookUnavailable(f"webhook {hook.name}: {type(exc).__name__}: {exc or 'no answer'}") from exc
    finally:
        watchdog.cancel()
        conn.close()


def webhook_handler(config: NodeConfig) -> Handler:
    """The handler of ``webhook`` jobs (payload ``{webhook, event, event_id, body}``)."""
    hooks = {h.name: h for h in config.webhooks}

    def handle(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        hook = hooks.get(str(payload.get("webhook")))
        if hook is None:
            raise PermanentJobError(f"webhook {payload.get('webhook')!r} is no longer configured")
        try:
            secret = secret_of(hook)
        except ValueError as exc:
            raise PermanentJobError(str(exc)) from exc
        status, _answer = deliver(
            hook, str(payload["event"]), str(payload["event_id"]), encode_body(payload["body"]), secret
        )
        logger.info("event %s delivered to webhook %s (HTTP %d)", payload["event_id"], hook.name, status)
        return {"status": status}

    return handle
