"""Write-back to a DICOMweb peer with STOW-RS (PS3.18 10.5): the same outbox as C-STORE, another transport.

:func:`stow_objects` POSTs the files as ``multipart/related; type="application/dicom"`` to
``<url>/studies``, a batch of at most :data:`BATCH_OBJECTS` objects and :data:`BATCH_BYTES` bytes per
request (one object larger than that goes alone), streamed from disk, and reads the answer within bounds
(:data:`MAX_RESPONSE_BYTES`, the peer's ``timeout_seconds`` per read and in all). What the answer means:

* 200 / 202 / 409 with a ``application/dicom+json`` body: each SOP instance in ReferencedSOPSequence is
  stored (a WarningReason is logged); each in FailedSOPSequence gets its FailureReason as its status, so
  the export handler treats it as it treats a C-STORE status (``A7xx`` out of resources: retry; any other:
  dead letter; ``0122`` SOP class not supported: a refused context, which the LABELMAP fallback answers);
  an instance the answer does not mention is not taken as stored (:class:`ExportError`, retried);
* 408, 429, 5xx, a broken connection or a timeout: :class:`ExportError` (retried with backoff);
* any other 4xx (400, 401, 403, 404, 413, 415, ...): :class:`ExportRefused`: retrying cannot help, the job
  is a dead letter with the status and the start of the server's message.

Credentials (bearer token or basic) are read from the environment (or the file) at each send and are
never logged; neither is the response beyond a short excerpt.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dicom_node.core.config import DicomwebPeer
from dicom_node.work.sending import SUCCESS, ExportError, ExportRefused, ObjectToSend, SendReport

logger = logging.getLogger(__name__)

#: Objects and bytes in one STOW-RS request.
BATCH_OBJECTS = 64
BATCH_BYTES = 64 << 20
#: The most of a response body that is read (a STOW-RS answer for 64 objects is a few tens of KiB).
MAX_RESPONSE_BYTES = 1 << 20
#: PS3.18 / PS3.4 status "SOP Class not supported" in a FailureReason.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: A FailureReason when the server gives none (0110: processing failure).
PROCESSING_FAILURE = 0x0110
_RETRY_STATUSES = frozenset({408, 429})
_REFERENCED_SOP_SEQUENCE = "00081199"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"


class _MultipartBody:
    """A multipart/related body read from the files as it is sent; its length is known beforehand."""

    def __init__(self, paths: Sequence[Path], boundary: str) -> None:
        self._parts: list[bytes | Path] = []
        for path in paths:
            self._parts += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), path, b"\r\n"]
        self._parts.append(f"--{boundary}--\r\n".encode())
        self.length = sum(len(p) if isinstance(p, bytes) else p.stat().st_size for p in self._parts)
        self._chunks = self._iterate()
        self._pending = b""

    def __len__(self) -> int:
        return self.length

    def _iterate(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
                continue
            with part.open("rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the body (all that is left for -1); ``b""`` at the end."""
        while size < 0 or len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def auth_headers(peer: DicomwebPeer) -> dict[str, str]:
    """The Authorization header of ``peer`` (from its environment variables or the file); never logged."""

    def secret(inline: Any, env: str | None, what: str) -> str:
        if env:
            value = os.environ.get(env)
            if not value:
                raise ExportRefused(
                    f"peer {peer.name}: the environment variable {env} ({what}) is not set; set it for the "
                    "node's processes and requeue the job"
                )
            return value
        return str(inline.get_secret_value())

    if peer.auth == "bearer":
        return {"Authorization": f"Bearer {secret(peer.token, peer.token_env, 'token_env')}"}
    if peer.auth == "basic":
        password = secret(peer.password, peer.password_env, "password_env")
        pair = base64.b64encode(f"{peer.username}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {pair}"}
    return {}


def _batches(objects: Sequence[ObjectToSend]) -> Iterator[list[ObjectToSend]]:
    batch: list[ObjectToSend] = []
    size = 0
    for obj in objects:
        length = obj.path.stat().st_size
        if batch and (len(batch) >= BATCH_OBJECTS or size + length > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(obj)
        size += length
    if batch:
        yield batch


def _read_bounded(response: Any, deadline: float) -> bytes:
    """At most :data:`MAX_RESPONSE_BYTES` of the body, read before ``deadline`` (the rest is left unread)."""
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES or time.monotonic() > deadline:
            break
    return bytes(body[:MAX_RESPONSE_BYTES])


def _excerpt(body: bytes) -> str:
    text = body[:300].decode("utf-8", "replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _items(answer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = answer.get(tag)
    values = element.get("Value", []) if isinstance(element, dict) else []
    return [v for v in values if isinstance(v, dict)]


def _value(item: dict[str, Any], tag: str) -> Any:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def parse_answer(body: bytes) -> tuple[dict[str, int | None], dict[str, int]]:
    """The STOW-RS answer (DICOM JSON): stored SOP instances (→ WarningReason or ``None``), failed (→ reason).

    Raises ``ValueError`` when the body is not such an answer.
    """
    answer = json.loads(body)
    if isinstance(answer, list) and len(answer) == 1:  # some servers wrap the dataset in a list
        answer = answer[0]
    if not isinstance(answer, dict):
        raise ValueError("the STOW-RS answer is not a DICOM JSON dataset")
    stored: dict[str, int | None] = {}
    for item in _items(answer, _REFERENCED_SOP_SEQUENCE):
        uid = _value(item, _REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            warning = _value(item, _WARNING_REASON)
            stored[uid] = int(warning) if isinstance(warning, int) else None
    failed: dict[str, int] = {}
    for item in _items(answer, _FAILED_SOP_SEQUENCE):
        uid = _value(item, _REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            reason = _value(item, _FAILURE_REASON)
            failed[uid] = int(reason) if isinstance(reason, int) else PROCESSING_FAILURE
    return stored, failed


def stow_objects(
    peer: DicomwebPeer,
    objects: Sequence[ObjectToSend],
    *,
    on_stored: Callable[[ObjectToSend, int], None] | None = None,
) -> SendReport:
    """STOW-RS ``objects`` to ``peer`` (see the module docstring); ``on_stored`` after each stored object.

    Raises :class:`ExportError` (retry) or :class:`ExportRefused` (dead letter); per-object failures are
    in the returned report, SOP classes the server does not support in its refused contexts.
    """
    import requests

    report = SendReport({o.sop_instance_uid: None for o in objects})
    headers = {"Accept": "application/dicom+json", **auth_headers(peer)}
    verify: bool | str = str(peer.ca_certificates) if peer.ca_certificates else True
    url = f"{peer.url}/studies"
    with requests.Session() as session:
        for batch in _batches(objects):
            boundary = f"laurel-{uuid.uuid4().hex}"
            body = _MultipartBody([o.path for o in batch], boundary)
            content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
            deadline = time.monotonic() + peer.timeout_seconds
            try:
                with session.post(
                    url,
                    data=body,
                    headers={**headers, "Content-Type": content_type, "Content-Length": str(len(body))},
                    timeout=peer.timeout_seconds,
                    verify=verify,
                    stream=True,
                    allow_redirects=False,
                ) as response:
                    status = response.status_code
                    answer = _read_bounded(response, deadline)
            except requests.RequestException as exc:
                raise ExportError(f"peer {peer.name} ({url}) not reachable: {type(exc).__name__}") from exc
            if status in _RETRY_STATUSES or status >= 500:
                raise ExportError(f"peer {peer.name} answered HTTP {status}: {_excerpt(answer)}")
            if status not in (200, 202, 409):
                raise ExportRefused(
                    f"peer {peer.name} ({url}) refused the STOW-RS request with HTTP {status}: {_excerpt(answer)}"
                    + (" (check the credentials)" if status in (401, 403) else "")
                )
            try:
                stored, failed = parse_answer(answer) if answer.strip() else ({}, {})
            except (ValueError, RecursionError):  # not DICOM JSON (or nested deeper than the parser goes)
                stored, failed = {}, {}
            if status == 200 and not stored and not failed:
                stored = {o.sop_instance_uid: None for o in batch}  # 200 without a readable body: all stored
            for obj in batch:
                uid = obj.sop_instance_uid
                if uid in failed and failed[uid] == SOP_CLASS_NOT_SUPPORTED:  # as a refused context: not sent
                    refused = (obj.sop_class_uid, (obj.transfer_syntax,))
                    if refused not in report.refused_contexts:
                        report.refused_contexts.append(refused)
                elif uid in failed:
                    report.statuses[uid] = failed[uid]
                    logger.error("peer %s refused SOP instance %s: reason 0x%04X", peer.name, uid, failed[uid])
                elif uid in stored:
                    warning = stored[uid]
                    if warning is not None:
                        logger.warning("peer %s stored SOP instance %s with warning 0x%04X", peer.name, uid, warning)
                    report.statuses[uid] = SUCCESS
                    if on_stored is not None:
                        on_stored(obj, SUCCESS)
                else:
                    raise ExportError(f"peer {peer.name} answered HTTP {status} without confirming SOP instance {uid}")
    return report
