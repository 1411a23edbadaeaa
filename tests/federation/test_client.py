"""The federation client: what goes on the wire, retries with backoff, refusals, the durable outbox."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.client import (
    FederationClient,
    FederationRefused,
    FederationUnavailable,
    UploadOutbox,
    parse_public_key,
)
from federation.server.schemas import ALLOWED_METADATA_KEYS
from tests.federation.capture import CaptureServer

KEY = "lfk_0123456789ab_" + "s" * 43


@pytest.fixture
def server_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    srv = CaptureServer()
    yield srv
    srv.close()


def _client(url: str, key: Ed25519PrivateKey, **kw: object) -> FederationClient:
    return FederationClient(url, KEY, key.public_key(), timeout=5, backoff=0.01, **kw)  # type: ignore[arg-type]


def _weights() -> list[np.ndarray]:
    return [np.full((3, 3, 1, 8), 0.5, np.float32), np.zeros(8, np.float32)]


def test_upload_carries_only_weight_arrays_and_the_allowed_metadata(
    capture: CaptureServer, server_key: Ed25519PrivateKey
) -> None:
    capture.responses = [(202, {"update_id": "u1", "state": "QUEUED", "status_url": "/api/v1/updates/u1"})]
    client = _client(capture.url, server_key)
    uid = client.upload_update("leg", 3, _weights(), n_slices=7, local_dice=0.81, layer_names=["enc/k", "enc/b"])
    assert uid == "u1"
    (req,) = capture.requests
    assert (req.method, req.path) == ("POST", "/api/v1/updates")
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert len(req.headers["Idempotency-Key"]) >= 8
    parts = req.multipart()
    assert set(parts) == {"weights", "metadata"}
    meta = json.loads(parts["metadata"][1])
    assert set(meta) == ALLOWED_METADATA_KEYS
    assert meta == {
        "model": "leg",
        "base_version": 3,
        "n_slices": 7,
        "local_dice": 0.81,
        "client_version": meta["client_version"],
    }
    with np.load(io.BytesIO(parts["weights"][1]), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["w0000_enc-k", "w0001_enc-b"]
        for name, w in zip(sorted(npz.files), _weights(), strict=True):
            np.testing.assert_array_equal(npz[name], w)


def test_client_refuses_non_float_arrays_before_sending(capture: CaptureServer, server_key: Ed25519PrivateKey) -> None:
    client = _client(capture.url, server_key)
    with pytest.raises(ValueError, match="only float weight arrays"):
        client.upload_update("leg", 1, [np.zeros((4, 4), np.uint16)], n_slices=5)  # e.g. pixels
    assert capture.requests == []


def test_retries_with_backoff_then_succeeds(capture: CaptureServer, server_key: Ed25519PrivateKey) -> None:
    capture.responses = [
        (503, {"detail": "busy"}),
        (502, {"detail": "gateway"}),
        (202, {"update_id": "u2", "state": "QUEUED", "status_url": "x"}),
    ]
    client = _client(capture.url, server_key, retries=3)
    assert client.upload_update("leg", 1, _weights(), n_slices=5) == "u2"
    assert len(capture.requests) == 3
    # every attempt carries the same idempotency key, so the server queues the update once
    assert len({r.headers["Idempotency-Key"] for r in capture.requests}) == 1


def test_4xx_is_not_retried_and_says_why(capture: CaptureServer, server_key: Ed25519PrivateKey) -> None:
    capture.responses = [(422, {"detail": "invalid weights: weight 0: shape [3] differs"})]
    client = _client(capture.url, server_key, retries=5)
    with pytest.raises(FederationRefused) as err:
        client.upload_update("leg", 1, _weights(), n_slices=5)
    assert err.value.status == 422 and "shape" in str(err.value.detail)
    assert len(capture.requests) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_raises_unavailable_after_retries(server_key: Ed25519PrivateKey) -> None:
    client = _client(f"http://127.0.0.1:{_closed_port()}", server_key, retries=2)
    with pytest.raises(FederationUnavailable, match="after 3 attempt"):
        client.latest_version("leg")


def test_outbox_keeps_uploads_across_restarts_and_downtime(tmp_path: Path, server_key: Ed25519PrivateKey) -> None:
    outbox = UploadOutbox(tmp_path / "outbox")
    entry = outbox.put("leg", 2, _weights(), n_slices=6, local_dice=0.7)
    down = _client(f"http://127.0.0.1:{_closed_port()}", server_key, retries=1)
    assert outbox.flush(down) == {}
    # "restart": a new outbox object over the same folder still holds the upload
    outbox = UploadOutbox(tmp_path / "outbox")
    assert outbox.entries("pending") == [entry]
    srv = CaptureServer([(202, {"update_id": "u9", "state": "QUEUED", "status_url": "x"})])
    try:
        assert outbox.flush(_client(srv.url, server_key)) == {entry: "u9"}
        assert srv.requests[0].headers["Idempotency-Key"] == entry
        assert outbox.record(entry)["state"] == "sent" and outbox.entries("pending") == []
        assert outbox.send(_client(srv.url, server_key), entry) == "u9"  # already sent: no second upload
        assert len(srv.requests) == 1
    finally:
        srv.close()


def test_outbox_marks_refused_uploads(tmp_path: Path, server_key: Ed25519PrivateKey) -> None:
    outbox = UploadOutbox(tmp_path / "outbox")
    entry = outbox.put("leg", 2, _weights(), n_slices=6)
    srv = CaptureServer([(422, {"detail": "base_version 2 of leg does not exist"})])
    try:
        assert outbox.flush(_client(srv.url, server_key)) == {}
    finally:
        srv.close()
    rec = outbox.record(entry)
    assert rec["state"] == "refused" and "does not exist" in rec["reason"]


def test_download_checks_the_announced_sha256(capture: CaptureServer, server_key: Ed25519PrivateKey) -> None:
    import hashlib

    good = hashlib.sha256(b"package-bytes").hexdigest()
    capture.responses = [
        (200, b"package-bytes", {"X-Laurel-Sha256": good}),
        (200, b"package-bytez", {"X-Laurel-Sha256": good}),
    ]
    client = _client(capture.url, server_key, retries=0)
    assert client.download_bytes("leg", 1) == b"package-bytes"
    with pytest.raises(FederationUnavailable, match="sha256"):
        client.download_bytes("leg", 1)


def test_public_key_forms(tmp_path: Path, server_key: Ed25519PrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    pub = server_key.public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pem").write_bytes(pem)
    import base64

    for form in (
        pub,
        base64.b64encode(raw).decode(),
        pem.decode(),
        tmp_path / "k.pem",
        str(tmp_path / "k.pem"),
    ):
        assert parse_public_key(form).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    with pytest.raises(ValueError, match="32"):
        parse_public_key(base64.b64encode(b"short").decode())
    assert "lfk_" not in repr(_client("https://x", server_key))
