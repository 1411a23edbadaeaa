"""Talk to the federation server: upload learned weights, follow them, pull signed versions, report usage.

Used by the node's upload and sync jobs. Weights only, never images: an upload is an ``.npz`` of the
model's float weight arrays plus JSON metadata with exactly ``model``, ``base_version``, ``n_slices``,
``local_dice``, ``client_version``.

Typical use::

    client = FederationClient("http://fed:8000", api_key, server_public_key="<base64 from laurel federation
                              public-key>", timeout=30, retries=4)
    latest = client.latest_version("leg")                      # int | None
    pkg = client.download("leg", latest)                        # ModelPackage, signature checked before dill
    learned = pkg.learn(volume, labels, spacing)                # on site
    uid = client.upload_update("leg", latest, learned.weights, n_slices=12, local_dice=0.83)
    client.update_status(uid)        # {"state": "QUEUED"|"VALIDATING"|"ACCEPTED"|"REJECTED"|"FAILED", ...}
    client.wait_for_update(uid, timeout=600)                   # polls until a terminal state
    client.post_stats("leg", latest, dice=0.83, n_slices=12)

Durability across restarts and server downtime: :class:`UploadOutbox` keeps each upload in a folder
(weights + metadata, fsync'd) until the server answered 202 (or refused it for good); each upload carries
an ``Idempotency-Key`` so that a retry after a lost answer never queues the same update twice.

Transport: the URL must be ``https://`` unless its host is a loopback address (``allow_insecure_http=True``
is the explicit opt-out for a test lab); the server's certificate is verified against the system's CAs or
``ca_file`` (a PEM bundle, e.g. the hospital's own CA). Redirects are not followed.

Errors: :class:`FederationRefused` (4xx: the request itself is wrong or not allowed; retrying will not help,
``.status`` and ``.detail`` say why) and :class:`FederationUnavailable` (network errors, timeouts, 5xx after
every retry: try again later). Both derive from :class:`FederationError`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import logging
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

CLIENT_VERSION = "laurel-0.1.0"
TERMINAL_STATES = frozenset({"ACCEPTED", "REJECTED", "FAILED"})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:-]+")


class FederationError(RuntimeError):
    """A federation request did not succeed."""

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class FederationRefused(FederationError):
    """The server refused the request (4xx); the same request will be refused again."""


class FederationUnavailable(FederationError):
    """The server could not be reached or failed (timeouts, connection errors, 5xx) after every retry."""


def parse_public_key(value: Ed25519PublicKey | str | bytes | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, base64 of the raw 32 bytes, PEM text, or a PEM file path."""
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, Path) or (isinstance(value, str) and value.endswith(".pem") and Path(value).is_file()):
        value = Path(value).read_bytes()
    data = value.encode() if isinstance(value, str) else bytes(value)
    if b"-----BEGIN" in data:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM file does not hold an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except ValueError as exc:
        raise ValueError("server_public_key must be base64 of 32 raw bytes or an Ed25519 PEM") from exc
    if len(raw) != 32:
        raise ValueError(f"server_public_key decodes to {len(raw)} bytes; an Ed25519 key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def check_transport(url: str, *, allow_insecure_http: bool = False) -> None:
    """``ValueError`` unless ``url`` is HTTPS, plain HTTP to a loopback host, or plain HTTP explicitly allowed."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"the federation URL {url!r} must look like https://host[:port]")
    if parts.scheme == "https" or allow_insecure_http:
        return
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(
            f"the federation URL {url!r} is plain HTTP to another host: use https:// (the server serves it with "
            "server.tls_certfile/tls_keyfile), or set federation.allow_insecure_http: true in a test lab"
        )


def encode_weights(weights: Sequence[np.ndarray], layer_names: Sequence[str] | None = None) -> bytes:
    """The ``.npz`` upload body: members ``w0000[_name]``, … in weight order, float arrays only, no pickle."""
    if layer_names is not None and len(layer_names) != len(weights):
        raise ValueError(f"{len(layer_names)} layer names for {len(weights)} weight arrays")
    arrays: dict[str, np.ndarray] = {}
    for i, w in enumerate(weights):
        a = np.asarray(w)
        if a.dtype.kind != "f":
            raise ValueError(f"weight {i} has dtype {a.dtype}; only float weight arrays are uploaded")
        suffix = ""
        if layer_names is not None:
            cleaned = _NAME_CHARS.sub("-", str(layer_names[i]))[:120].strip("-")
            suffix = f"_{cleaned}" if cleaned else ""
        arrays[f"w{i:04d}{suffix}"] = np.ascontiguousarray(a)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def build_metadata(
    model: str,
    base_version: int,
    n_slices: int,
    local_dice: float | None,
    client_version: str = CLIENT_VERSION,
) -> dict[str, Any]:
    """The upload's metadata: exactly the keys the server allows, nothing about the patient or the images."""
    return {
        "model": str(model),
        "base_version": int(base_version),
        "n_slices": int(n_slices),
        "local_dice": None if local_dice is None else float(local_dice),
        "client_version": client_version,
    }


class FederationClient:
    """HTTP client of the federation server with timeouts, retries with backoff and signature checks."""

    def __init__(
        self,
        url: str,
        api_key: str,
        server_public_key: Ed25519PublicKey | str | bytes | Path,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        client_version: str = CLIENT_VERSION,
        session: requests.Session | None = None,
        max_package_bytes: int = 512 * 2**20,
        allow_insecure_http: bool = False,
        ca_file: Path | str | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required (laurel federation add-site NAME prints one)")
        check_transport(url, allow_insecure_http=allow_insecure_http)
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"the federation CA file {ca_file} does not exist")
        self.url = url.rstrip("/")
        self.public_key = parse_public_key(server_public_key)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.client_version = client_version
        self.max_package_bytes = max_package_bytes
        self.session = session or requests.Session()
        # per request, not session.verify: requests lets REQUESTS_CA_BUNDLE override a session's CA file
        self.verify: str | bool = str(ca_file) if ca_file is not None else True
        self._auth = {"Authorization": f"Bearer {api_key}"}

    def __repr__(self) -> str:  # never show the key
        return f"FederationClient({self.url!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    # -- transport -----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self._auth, **kwargs.pop("headers", {})}
        last: str = ""
        for attempt in range(self.retries + 1):
            delay = min(self.backoff_max, self.backoff * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311 - jitter
            try:
                resp = self.session.request(
                    method,
                    f"{self.url}{path}",
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,  # a redirect could lead the key to another (or a plain-HTTP) host
                    verify=self.verify,
                    **kwargs,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    return resp
                if resp.status_code not in _RETRY_STATUS:
                    detail = _detail(resp)
                    raise FederationRefused(
                        f"{method} {path}: HTTP {resp.status_code}: {detail}",
                        status=resp.status_code,
                        detail=detail,
                    )
                last = f"HTTP {resp.status_code}: {_detail(resp)}"
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = min(self.backoff_max, float(retry_after))
            if attempt < self.retries:
                log.info("federation %s %s failed (%s); retry %d/%d", method, path, last, attempt + 1, self.retries)
                time.sleep(delay)
        raise FederationUnavailable(f"{method} {path} failed after {self.retries + 1} attempt(s): {last}")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- models --------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``/health`` of the server."""
        result: dict[str, Any] = self._json("GET", "/health")
        return result

    def models(self) -> list[dict[str, Any]]:
        """The models this site may use, with their latest version, sha256 and Dice."""
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/models")["models"]
        return result

    def model_info(self, model: str) -> dict[str, Any]:
        """Latest version, every version and the validation Dice history of ``model``."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{model}")
        return result

    def latest_version(self, model: str) -> int | None:
        """The newest published version of ``model`` (None before the first)."""
        latest = self.model_info(model)["latest_version"]
        return None if latest is None else int(latest)

    def download_bytes(self, model: str, version: int) -> bytes:
        """The signed package bytes of a version, checked against the sha256 the server announces."""
        limit = self.max_package_bytes
        resp = self._request("GET", f"/api/v1/models/{model}/versions/{int(version)}/package", stream=True)
        try:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise FederationRefused(
                    f"{model} version {version}: the server offers {declared} bytes (limit {limit})"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_content(1 << 20):  # never more than the limit in memory, whatever it claims
                size += len(chunk)
                if size > limit:
                    raise FederationRefused(f"{model} version {version}: the package exceeds {limit} bytes")
                chunks.append(chunk)
        finally:
            resp.close()
        data = b"".join(chunks)
        announced = resp.headers.get("X-Laurel-Sha256")
        if announced and hashlib.sha256(data).hexdigest() != announced:
            raise FederationUnavailable(f"{model} version {version}: the download does not match its sha256")
        return data

    def download(self, model: str, version: int | None = None) -> Any:
        """A version (default: the latest) as a ModelPackage; its signature is verified with the server's
        public key BEFORE dill reads a byte (``models.package.UntrustedPackage`` otherwise)."""
        from models.package import load

        if version is None:
            version = self.latest_version(model)
            if version is None:
                raise FederationRefused(f"model {model} has no published version", status=404)
        data = self.download_bytes(model, version)
        return load(data, trusted_keys=[self.public_key], allow_zoo=False)

    # -- updates -------------------------------------------------------------------------------------
    def upload_encoded(self, weights_npz: bytes, metadata: dict[str, Any], idempotency_key: str | None = None) -> str:
        """Upload an already encoded update (see :func:`encode_weights`); returns the update id."""
        key = idempotency_key or uuid.uuid4().hex
        resp = self._request(
            "POST",
            "/api/v1/updates",
            files={"weights": ("weights.npz", weights_npz, "application/octet-stream")},
            data={"metadata": json.dumps(metadata)},
            headers={"Idempotency-Key": key},
        )
        update_id = str(resp.json()["update_id"])
        log.info("uploaded update %s (%s base %s)", update_id, metadata.get("model"), metadata.get("base_version"))
        return update_id

    def upload_update(
        self,
        model: str,
        base_version: int,
        weights: Sequence[np.ndarray],
        *,
        n_slices: int,
        local_dice: float | None = None,
        layer_names: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Upload the weights learned from ``base_version``; returns the update id (202 from the server)."""
        meta = build_metadata(model, base_version, n_slices, local_dice, self.client_version)
        return self.upload_encoded(encode_weights(weights, layer_names), meta, idempotency_key)

    def update_status(self, update_id: str) -> dict[str, Any]:
        """Where an update stands: ``state``, ``version`` (ACCEPTED), ``reason`` (REJECTED), Dice values."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/updates/{update_id}")
        return result

    def list_updates(self, model: str | None = None) -> list[dict[str, Any]]:
        """This site's updates, newest first."""
        result: dict[str, Any] = self._json("GET", "/api/v1/updates", params={"model": model} if model else None)
        return list(result["updates"])

    def wait_for_update(self, update_id: str, *, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the update reaches ACCEPTED, REJECTED or FAILED; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.update_status(update_id)
            if status["state"] in TERMINAL_STATES:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"update {update_id} still {status['state']} after {timeout:.0f} s")
            time.sleep(poll)

    # -- usage ---------------------------------------------------------------------------------------
    def post_stats(self, model: str, version: int, dice: float, *, n_slices: int | None = None) -> None:
        """Report one usage statistic (Dice of the draft against the operator's approved result)."""
        body = {
            "model": model,
            "version": int(version),
            "dice": float(dice),
            "n_slices": None if n_slices is None else int(n_slices),
            "client_version": self.client_version,
        }
        self._request("POST", "/api/v1/stats", json=body)

    def stats(self, model: str | None = None) -> dict[str, Any]:
        """Usage statistics and per-model summaries."""
        result: dict[str, Any] = self._json("GET", "/api/v1/stats", params={"model": model} if model else None)
        return result


def _detail(resp: requests.Response) -> Any:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    return body.get("detail", body) if isinstance(body, dict) else body


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UploadOutbox:
    """Uploads kept in a folder until the server took them: survives restarts and server downtime.

    Each entry is ``<id>.npz`` (the encoded weights) and ``<id>.json`` (metadata, state, update id), both
    fsync'd; the JSON is written last, so an entry without it never existed. The entry id is the upload's
    ``Idempotency-Key``: re-sending after a lost answer returns the same update id.
    States: ``pending`` → ``sent`` (update id known) or ``refused`` (4xx, with the reason).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(
        self,
        model: str,
        base_version: int,
        weights: Sequence[np.ndarray],
        *,
        n_slices: int,
        local_dice: float | None = None,
        layer_names: Sequence[str] | None = None,
        client_version: str = CLIENT_VERSION,
    ) -> str:
        """Keep an upload durably; returns its entry id."""
        entry = uuid.uuid4().hex
        _atomic_write(self.folder / f"{entry}.npz", encode_weights(weights, layer_names))
        record = {
            "metadata": build_metadata(model, base_version, n_slices, local_dice, client_version),
            "state": "pending",
            "update_id": None,
            "reason": None,
            "created": time.time(),
        }
        _atomic_write(self.folder / f"{entry}.json", json.dumps(record).encode())
        return entry

    def record(self, entry: str) -> dict[str, Any]:
        """The entry's metadata and state."""
        result: dict[str, Any] = json.loads((self.folder / f"{entry}.json").read_text())
        return result

    def entries(self, state: str | None = None) -> list[str]:
        """Entry ids, oldest first, optionally only those in ``state``."""
        recs = []
        for path in self.folder.glob("*.json"):
            rec = json.loads(path.read_text())
            if state is None or rec["state"] == state:
                recs.append((rec.get("created", 0.0), path.stem))
        return [e for _, e in sorted(recs)]

    def send(self, client: FederationClient, entry: str) -> str:
        """Upload one entry (idempotent) and return its update id; FederationUnavailable: retry later."""
        rec = self.record(entry)
        if rec["state"] == "sent":
            return str(rec["update_id"])
        if rec["state"] == "refused":
            raise FederationRefused(f"outbox entry {entry} was refused: {rec['reason']}")
        data = (self.folder / f"{entry}.npz").read_bytes()
        try:
            update_id = client.upload_encoded(data, rec["metadata"], idempotency_key=entry)
        except FederationRefused as exc:
            rec.update(state="refused", reason=str(exc))
            _atomic_write(self.folder / f"{entry}.json", json.dumps(rec).encode())
            raise
        rec.update(state="sent", update_id=update_id)
        _atomic_write(self.folder / f"{entry}.json", json.dumps(rec).encode())
        (self.folder / f"{entry}.npz").unlink(missing_ok=True)
        return update_id

    def flush(self, client: FederationClient) -> dict[str, str]:
        """Send pending entries, oldest first, until the server is unavailable; returns entry → update id."""
        sent: dict[str, str] = {}
        for entry in self.entries("pending"):
            try:
                sent[entry] = self.send(client, entry)
            except FederationRefused as exc:
                log.warning("outbox entry %s refused by the server: %s", entry, exc)
            except FederationUnavailable:
                log.info(
                    "federation server unavailable; %d upload(s) stay in the outbox",
                    len(self.entries("pending")),
                )
                break
        return sent
