"""The only code of the review station that talks to the node: its HTTP API (CONTRACTS.md), with a token.

Every failure becomes a :class:`NodeError` whose message an operator can act on. The token is sent in the
``Authorization`` header only; it never appears in logs, messages or ``repr``.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from review_station.domain import ProtocolError, Segment, StudySummary, Volume

log = logging.getLogger(__name__)

TOKEN_ENV = "LAUREL_TOKEN"  # noqa: S105 - the variable's name, not a token
NPY_MEDIA_TYPE = "application/x-npy"
AUTH_MESSAGE = "the token was refused by the node — ask for a new one with `laurel token create`"
LABEL_VERSIONS = ("draft", "corrected", "current")


class NodeError(Exception):
    """A request to the node failed; ``str()`` is a message for the operator."""


class NodeUnreachable(NodeError):
    """No answer from the node (not running, wrong address, network down, or too slow)."""


class AuthError(NodeError):
    """The node refused the token (HTTP 401/403), or there is no token."""


class NodeRequestError(NodeError):
    """The node answered with an HTTP error; ``status`` and ``detail`` say which and why."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class NotFound(NodeRequestError):
    """HTTP 404: no such study or series (any more)."""


class Conflict(NodeRequestError):
    """HTTP 409: the study is not in a state that allows this (e.g. approved already)."""


class InvalidResponse(NodeError, ProtocolError):
    """The node's answer does not follow the API contract."""


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialize an array as ``.npy`` without pickles."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def parse_npy(data: bytes, *, dtype: type | None = None, ndim: int | None = None, what: str = "array") -> np.ndarray:
    """Read an ``.npy`` body, refusing pickles and anything but the expected dtype and dimensions."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidResponse(f"the node sent a {what} that is not a valid .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise InvalidResponse(f"the node sent a {what} that is not a single .npy array")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise InvalidResponse(f"the node sent a {what} of dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and arr.ndim != ndim:
        raise InvalidResponse(f"the node sent a {what} with {arr.ndim} dimensions, expected {ndim}")
    return arr


def _floats3(header: str | None, name: str, default: tuple[float, float, float] | None) -> tuple[float, float, float]:
    if header is None:
        if default is None:
            raise InvalidResponse(f"the node's volume answer lacks the {name} header")
        return default
    try:
        a, b, c = (float(p) for p in header.split(","))
    except ValueError:
        raise InvalidResponse(f"the node's {name} header is not three numbers: {header!r}") from None
    return (a, b, c)


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class NodeClient:
    """HTTP client of the node API; each thread gets its own connection pool (``requests.Session``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 120.0,
        session: requests.Session | None = None,
    ) -> None:
        base_url = base_url.strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the node URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = (connect_timeout, read_timeout)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        if session is not None:
            self._adopt(session)

    def _adopt(self, session: requests.Session) -> requests.Session:
        retry = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2, allowed_methods={"GET"})
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        self._local.session = session
        with self._lock:
            self._sessions.append(session)
        return session

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        return session if session is not None else self._adopt(requests.Session())

    def __repr__(self) -> str:
        return f"NodeClient({self.base_url!r}, token={'set' if self._token else 'missing'})"

    @property
    def has_token(self) -> bool:
        """Whether a token is configured."""
        return bool(self._token)

    def set_token(self, token: str | None) -> None:
        """Use another token from now on."""
        self._token = token or None

    def close(self) -> None:
        """Release the connections of every thread."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()

    # ---- transport -------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        hdrs = dict(headers or {})
        if auth:
            if not self._token:
                raise AuthError(
                    f"no token for the node at {self.base_url}: pass --token or set {TOKEN_ENV} "
                    "(an administrator creates one with `laurel token create`)"
                )
            hdrs["Authorization"] = f"Bearer {self._token}"
        url = f"{self.base_url}{path}"
        try:
            resp = self._session.request(
                method, url, params=params, json=json, data=data, headers=hdrs, timeout=self.timeout
            )
        except requests.Timeout as exc:
            raise NodeUnreachable(
                f"the node at {self.base_url} did not answer {method} {path} within "
                f"{self.timeout[1]:.0f} s; it may be busy — try again"
            ) from exc
        except requests.ConnectionError as exc:
            raise NodeUnreachable(
                f"the node at {self.base_url} cannot be reached ({type(exc).__name__}); check that "
                "`laurel serve` is running there and that the address given with --node is right"
            ) from exc
        except requests.RequestException as exc:
            raise NodeUnreachable(f"request to the node at {self.base_url} failed: {exc}") from exc
        if resp.status_code in (401, 403):
            log.warning("node refused the token (HTTP %s) for %s %s", resp.status_code, method, path)
            raise AuthError(AUTH_MESSAGE)
        if resp.status_code >= 400:
            detail = _detail(resp)
            msg = f"the node refused {method} {path} (HTTP {resp.status_code}): {detail}"
            cls = {404: NotFound, 409: Conflict}.get(resp.status_code, NodeRequestError)
            raise cls(msg, resp.status_code, detail)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise InvalidResponse(f"the node's answer to {method} {path} is not JSON") from None

    # ---- API -------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /health`` (no token needed)."""
        body = self._json("GET", "/health", auth=False)
        if not isinstance(body, dict) or body.get("status") != "ok":
            raise InvalidResponse(f"the node at {self.base_url} is not healthy: {body!r}")
        return body

    def check(self) -> dict[str, Any]:
        """Health, then one authenticated call: raises NodeUnreachable or AuthError with a clear message."""
        health = self.health()
        self._json("GET", "/api/v1/studies", params={"state": "PENDING_REVIEW"})
        return health

    def studies(self, state: str | None = "PENDING_REVIEW") -> list[StudySummary]:
        """``GET /api/v1/studies[?state=...]`` (``state=None``: all)."""
        params: dict[str, Any] = {"order": "oldest", "limit": 2000}  # the oldest waiting study is never cut off
        if state:
            params["state"] = state
        body = self._json("GET", "/api/v1/studies", params=params)
        try:
            return [StudySummary.from_json(s) for s in body["studies"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResponse(f"the node's study list does not follow the API: {exc}") from exc

    def study(self, study_id: int) -> StudySummary:
        """``GET /api/v1/studies/{id}`` with its series."""
        body = self._json("GET", f"/api/v1/studies/{int(study_id)}")
        try:
            return StudySummary.from_json(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResponse(f"the node's study {study_id} does not follow the API: {exc}") from exc

    def volume(self, series_id: int) -> Volume:
        """``GET /api/v1/series/{id}/volume``: float32 ``(z, y, x)`` with spacing and origin."""
        resp = self._request("GET", f"/api/v1/series/{int(series_id)}/volume")
        image = parse_npy(resp.content, dtype=np.float32, ndim=3, what="volume")
        spacing = _floats3(resp.headers.get("X-Laurel-Spacing"), "X-Laurel-Spacing", None)
        if min(spacing) <= 0:
            raise InvalidResponse(f"the node sent a non-positive spacing {spacing}")
        origin = _floats3(resp.headers.get("X-Laurel-Origin"), "X-Laurel-Origin", (0.0, 0.0, 0.0))
        return Volume(image, spacing, origin)

    def labels(self, series_id: int, version: str = "draft") -> np.ndarray:
        """``GET /api/v1/series/{id}/labels?version=...``: uint8 ``(z, y, x)``."""
        if version not in LABEL_VERSIONS:
            raise ValueError(f"label version must be one of {LABEL_VERSIONS}, got {version!r}")
        resp = self._request("GET", f"/api/v1/series/{int(series_id)}/labels", params={"version": version})
        return parse_npy(resp.content, dtype=np.uint8, ndim=3, what="label volume")

    def segments(self, series_id: int) -> list[Segment]:
        """``GET /api/v1/series/{id}/segments``: names and colours of the label values."""
        body = self._json("GET", f"/api/v1/series/{int(series_id)}/segments")
        try:
            return [Segment.from_json(s) for s in body["segments"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResponse(f"the node's segment list does not follow the API: {exc}") from exc

    def put_labels(self, series_id: int, labels: np.ndarray, SeriesInstanceUID: str) -> None:
        """``PUT /api/v1/series/{id}/labels?SeriesInstanceUID=...``: save corrections (the study stays pending).

        The UID is the one of the series on screen: the node answers 409 (:class:`Conflict`) when the id
        now names another series, so edits never land on the wrong patient.
        """
        if labels.dtype != np.uint8 or labels.ndim != 3:
            raise ValueError(f"labels must be a uint8 (z, y, x) volume, got {labels.dtype} {labels.shape}")
        if not SeriesInstanceUID:
            raise ValueError("saving labels needs the SeriesInstanceUID of the series on screen")
        self._request(
            "PUT",
            f"/api/v1/series/{int(series_id)}/labels",
            params={"SeriesInstanceUID": SeriesInstanceUID},
            data=npy_bytes(labels),
            headers={"Content-Type": NPY_MEDIA_TYPE},
        )

    def approve(self, study_id: int, StudyInstanceUID: str, comment: str | None = None) -> dict[str, Any]:
        """``POST /api/v1/studies/{id}/approve`` naming the study on screen; the operator is the token's."""
        if not StudyInstanceUID:
            raise ValueError("an approval needs the StudyInstanceUID of the study on screen")
        body = self._json(
            "POST",
            f"/api/v1/studies/{int(study_id)}/approve",
            json={"StudyInstanceUID": StudyInstanceUID, "comment": comment or None},
        )
        return body if isinstance(body, dict) else {"result": body}

    def resegment(self, series_id: int, SeriesInstanceUID: str) -> dict[str, Any]:
        """``POST /api/v1/series/{id}/resegment``: a new draft over every image of the series on screen."""
        if not SeriesInstanceUID:
            raise ValueError("a new draft needs the SeriesInstanceUID of the series on screen")
        body = self._json(
            "POST", f"/api/v1/series/{int(series_id)}/resegment", json={"SeriesInstanceUID": SeriesInstanceUID}
        )
        return body if isinstance(body, dict) else {"result": body}

    def amend(self, study_id: int, StudyInstanceUID: str, reason: str) -> dict[str, Any]:
        """``POST /api/v1/studies/{id}/amend``: reopen an approved study for correction, with a reason."""
        if not reason or not reason.strip():
            raise ValueError("an amendment needs a reason")
        if not StudyInstanceUID:
            raise ValueError("an amendment needs the StudyInstanceUID of the study on screen")
        body = self._json(
            "POST",
            f"/api/v1/studies/{int(study_id)}/amend",
            json={"StudyInstanceUID": StudyInstanceUID, "reason": reason.strip()},
        )
        return body if isinstance(body, dict) else {"result": body}

    def reject(self, study_id: int, StudyInstanceUID: str, reason: str) -> dict[str, Any]:
        """``POST /api/v1/studies/{id}/reject`` naming the study on screen, with a non-empty reason."""
        if not reason or not reason.strip():
            raise ValueError("a rejection needs a reason")
        if not StudyInstanceUID:
            raise ValueError("a rejection needs the StudyInstanceUID of the study on screen")
        body = self._json(
            "POST",
            f"/api/v1/studies/{int(study_id)}/reject",
            json={"StudyInstanceUID": StudyInstanceUID, "reason": reason.strip()},
        )
        return body if isinstance(body, dict) else {"result": body}
