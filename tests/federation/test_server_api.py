"""The federation API on a real uvicorn server: keys, permissions, refusals, downloads, stats, metrics."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from federation.client import FederationRefused, encode_weights
from federation.server.config import FederationConfig
from tests.federation.conftest import ServerFactory, perturbed, wait_terminal
from tests.federation.payloads import dill_payload, npz_with_object_array, pickle_payload


def _post(url: str, key: str | None, weights: bytes, metadata: dict[str, Any] | str) -> requests.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    meta = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return requests.post(
        f"{url}/api/v1/updates",
        headers=headers,
        files={"weights": ("w.npz", weights, "application/octet-stream")},
        data={"metadata": meta},
        timeout=30,
    )


def _meta(**changes: Any) -> dict[str, Any]:
    return {
        "model": "leg",
        "base_version": 0,
        "n_slices": 6,
        "local_dice": 0.8,
        "client_version": "t",
        **changes,
    }


@pytest.fixture
def server(start_server: ServerFactory, fed_config: Callable[..., FederationConfig], base_package: Any) -> Any:
    srv = start_server(fed_config())
    srv.base_version = base_package.version
    return srv


def test_keys_only_in_the_header_bad_and_revoked_keys_get_401(server: Any) -> None:
    url = server.url
    key = server.add_site("site-a")
    assert requests.get(f"{url}/api/v1/models", timeout=10).status_code == 401
    r = requests.get(f"{url}/api/v1/models", headers={"Authorization": "Bearer lfk_nope"}, timeout=10)
    assert r.status_code == 401 and "invalid or revoked" in r.json()["detail"]
    r = requests.get(f"{url}/api/v1/models", params={"api_key": key}, timeout=10)
    assert r.status_code == 401 and "only in the Authorization header" in r.json()["detail"]
    ok = requests.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert ok.status_code == 200 and [m["name"] for m in ok.json()["models"]] == ["leg"]

    w = encode_weights(server.state.processor.package("leg", server.base_version).weights)
    assert _post(url, None, w, _meta(base_version=server.base_version)).status_code == 401
    server.state.keys.revoke("site-a")
    r = _post(url, key, w, _meta(base_version=server.base_version))
    assert r.status_code == 401
    assert (
        requests.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 401
    )


def test_per_model_permissions(server: Any) -> None:
    key = server.add_site("thigh-only", ["thigh"])
    client = server.client(key)
    assert client.models() == []
    with pytest.raises(FederationRefused) as err:
        client.model_info("leg")
    assert err.value.status == 403
    with pytest.raises(FederationRefused) as err:
        client.upload_update("leg", server.base_version, [np.zeros(3, np.float32)], n_slices=5)
    assert err.value.status == 403


@pytest.mark.parametrize("make", [pickle_payload, dill_payload, npz_with_object_array])
def test_pickle_and_dill_uploads_are_refused_without_being_unpickled(
    server: Any, tmp_path: Path, make: Callable[[Path], bytes]
) -> None:
    marker = tmp_path / "executed"
    key = server.add_site("mallory")
    r = _post(server.url, key, make(marker), _meta(base_version=server.base_version))
    assert r.status_code == 422, r.text
    # a pickle is refused as one; the object .npz already by its member count (from the zip directory)
    assert "pickle" in r.json()["detail"] or "expected 107 weight arrays" in r.json()["detail"]
    assert not marker.exists()  # the payload would have written it, had anything unpickled it
    assert server.state.registry.list_updates() == []


def test_wrong_shapes_metadata_and_base_give_422_with_what_to_fix(server: Any) -> None:
    key = server.add_site("site-b")
    base = server.state.processor.package("leg", server.base_version)
    good = encode_weights(base.weights)
    wrong = [w for w in base.weights]
    wrong[-1] = np.zeros(wrong[-1].shape[0] + 1, np.float32)
    r = _post(server.url, key, encode_weights(wrong), _meta(base_version=server.base_version))
    assert r.status_code == 422 and f"weight {len(wrong) - 1}: shape" in r.json()["detail"]
    r = _post(server.url, key, encode_weights(base.weights[:-1]), _meta(base_version=server.base_version))
    assert r.status_code == 422 and f"expected {len(base.weights)} weight arrays" in r.json()["detail"]
    nan = [w.copy() for w in base.weights]
    nan[0].flat[0] = np.nan
    r = _post(server.url, key, encode_weights(nan), _meta(base_version=server.base_version))
    assert r.status_code == 422 and "NaN" in r.json()["detail"]
    # metadata: exactly the allowed keys, no DICOM attributes, no pixels
    r = _post(server.url, key, good, _meta(base_version=server.base_version, PatientName="Doe^Jane"))
    assert r.status_code == 422 and "PatientName: key not allowed" in r.json()["detail"]
    r = _post(server.url, key, good, _meta(base_version=server.base_version, n_slices="6"))
    assert r.status_code == 422
    r = _post(server.url, key, good, "{not json")
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = _post(server.url, key, good, _meta(base_version=server.base_version + 99))
    assert r.status_code == 422 and "does not exist" in r.json()["detail"]
    assert server.state.registry.list_updates() == []


def test_download_info_and_signature(server: Any, tmp_path: Path) -> None:
    from models.package import UntrustedPackage, load

    key = server.add_site("site-c")
    client = server.client(key)
    info = client.model_info("leg")
    assert info["latest_version"] == server.base_version
    assert info["dice_history"][0]["version"] == server.base_version
    assert len(info["versions"][0]["sha256"]) == 64
    pkg = client.download("leg")
    assert pkg.version == server.base_version and pkg.region == "leg"
    data = client.download_bytes("leg", server.base_version)
    # Only the server's key makes the package loadable: another key, or one flipped byte, and dill never runs.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with pytest.raises(UntrustedPackage):
        load(data, trusted_keys=[Ed25519PrivateKey.generate().public_key()], allow_zoo=False)
    tampered = bytearray(data)
    tampered[-10] ^= 0xFF
    with pytest.raises(UntrustedPackage):
        load(bytes(tampered), trusted_keys=[server.state.server_key.public_key], allow_zoo=False)
    r = requests.get(
        f"{server.url}/api/v1/models/leg/versions/999/package",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 404


def test_stats_health_metrics_and_no_key_in_logs(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        key = server.add_site("site-d")
        client = server.client(key)
        client.post_stats("leg", server.base_version, 0.83, n_slices=12)
        client.post_stats("leg", server.base_version, 0.91)
        with pytest.raises(FederationRefused) as err:
            client.post_stats("leg", server.base_version + 50, 0.5)
        assert err.value.status == 422
        stats = client.stats("leg")
        uid = client.upload_update(
            "leg",
            server.base_version,
            perturbed(server.state.processor.package("leg", server.base_version).weights, 0.0),
            n_slices=6,
            local_dice=0.8,
        )
        final = wait_terminal(client, uid)
    assert [s["dice"] for s in stats["stats"]] == [0.83, 0.91]
    label = server.state.labels.pseudonym("site-d")  # names are hidden by default (dashboard.show_site_names)
    assert [s["site"] for s in stats["stats"]] == [label, label] and label.startswith("site-") and len(label) == 17
    assert stats["summary"][0]["count"] == 2 and abs(stats["summary"][0]["median_dice"] - 0.87) < 1e-9
    assert final["state"] == "ACCEPTED", final
    health = client.health()
    assert health["status"] == "ok" and health["models"]["leg"] == final["version"]
    assert health["public_key"] == server.state.server_key.public_b64()
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'laurel_fed_updates_finished_total{model="leg",state="ACCEPTED"} 1.0' in metrics
    assert "laurel_fed_validation_seconds_bucket" in metrics
    assert key not in caplog.text and key.split("_", 2)[2] not in caplog.text
    page = requests.get(f"{server.url}/dashboard", timeout=30)
    assert page.status_code == 200 and "<svg" in page.text
    assert f"<td>{label}</td>" in page.text and "<td>site-d</td>" not in page.text
    assert key not in page.text


def test_upload_is_idempotent_per_key(server: Any) -> None:
    key = server.add_site("site-e")
    client = server.client(key)
    weights = server.state.processor.package("leg", server.base_version).weights
    first = client.upload_update("leg", server.base_version, weights, n_slices=5, idempotency_key="retry-12345678")
    again = client.upload_update("leg", server.base_version, weights, n_slices=5, idempotency_key="retry-12345678")
    assert first == again
    with pytest.raises(FederationRefused) as err:
        client.upload_update(
            "leg", server.base_version, perturbed(weights, 0.01), n_slices=5, idempotency_key="retry-12345678"
        )
    assert err.value.status == 409
    wait_terminal(client, first)
    assert len(server.state.registry.list_updates()) == 1


def test_upload_body_is_weights_only(server: Any) -> None:
    """What the server stored for an update: float arrays shaped like the model's weights, nothing else."""
    key = server.add_site("site-f")
    client = server.client(key)
    base = server.state.processor.package("leg", server.base_version)
    uid = client.upload_update("leg", server.base_version, base.weights, n_slices=5)
    stored = server.state.registry.upload_bytes(server.state.registry.get_update(uid))
    with np.load(io.BytesIO(stored), allow_pickle=False) as npz:
        assert len(npz.files) == len(base.weights)
        for name, w in zip(sorted(npz.files), base.weights, strict=True):
            assert npz[name].shape == w.shape and npz[name].dtype.kind == "f"
    wait_terminal(client, uid)


def test_oversized_upload_is_refused_before_parsing(
    start_server: ServerFactory, fed_config: Callable[..., FederationConfig]
) -> None:
    srv = start_server(fed_config(server={"max_upload_mb": 1}))
    key = srv.add_site("big")
    r = _post(srv.url, key, b"\0" * (3 * 2**20), _meta())
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]


def test_access_log_filter_redacts_keys_in_urls() -> None:
    from federation.server.app import RedactSecrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/v1/models?api_key=lfk_0123456789ab_secret&x=1", "1.1", 401),
        None,
    )
    assert RedactSecrets().filter(record)
    assert "secret" not in record.getMessage() and "api_key=REDACTED&x=1" in record.getMessage()
