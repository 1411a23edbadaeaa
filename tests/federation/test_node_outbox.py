"""The node's upload job is a durable outbox: with the federation server down it waits and retries, and the
update arrives exactly once when the server comes up (SYNTHETIC phantom data, a whole node in-process)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests

from federation.server.app import BackgroundServer
from federation.server.config import FederationConfig
from tests.peers import free_port, wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, send_files

pytestmark = pytest.mark.slow

KEY_ENV = "LAUREL_TEST_FEDERATION_KEY"


@pytest.fixture
def federation_later(
    fed_config: Callable[..., FederationConfig], base_package: Any
) -> Iterator[tuple[FederationConfig, int, str, Callable[[], BackgroundServer]]]:
    """A federation server's config, port, public key and a site key, with a function to start it later."""
    from federation.server.auth import SiteKeys
    from federation.server.registry import Registry
    from federation.server.signing import load_or_create
    from federation.server.tables import make_engine

    cfg = fed_config()
    port = free_port()
    public = load_or_create(cfg.signing_key_path).public_b64()
    _site, key = SiteKeys(Registry(make_engine(cfg.db_url), cfg.data_dir)).add_site("hospital-a")
    started: list[BackgroundServer] = []

    def start() -> BackgroundServer:
        srv = BackgroundServer(cfg, host="127.0.0.1", port=port)
        if "leg" not in srv.state.registry.model_names():
            srv.state.processor.publish_initial("leg", base_package)
        started.append(srv)
        return srv.start()

    yield cfg, port, f"{public}|{key}", start
    for srv in started:
        srv.stop()


def _upload_jobs(running: RunningNode) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = running.get("/api/v1/jobs", params={"kind": "upload"}).json()["jobs"]
    return jobs


def test_upload_waits_for_the_server_and_arrives_once(
    workflow_node_factory: Callable[..., RunningNode],
    federation_later: tuple[FederationConfig, int, str, Callable[[], BackgroundServer]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _cfg, port, secrets, start_server = federation_later
    public, key = secrets.split("|")
    monkeypatch.setenv(KEY_ENV, key)
    running = workflow_node_factory(
        federation={
            "url": f"http://127.0.0.1:{port}",
            "api_key_env": KEY_ENV,
            "server_public_key": public,
            "sync_interval_seconds": 3600,
            "timeout_seconds": 5,
        },
        jobs={
            "workers": 1,
            "poll_seconds": 0.05,
            "backoff_base_seconds": 0.2,
            "backoff_max_seconds": 1.0,
            "max_attempts": 100,
        },
    )
    files, ph = phantom_series(tmp_path / "phantom", seed=8181)
    send_files(running.node.port, files)
    study = running.wait_state(
        str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), {"PENDING_REVIEW"}
    )
    series = running.get(f"/api/v1/studies/{study['id']}").json()["series"][0]
    buf = io.BytesIO()
    np.save(buf, ph.labels.astype(np.uint8), allow_pickle=False)
    requests.put(
        f"{running.url}/api/v1/series/{series['id']}/labels",
        data=buf.getvalue(),
        params={"SeriesInstanceUID": series["SeriesInstanceUID"]},
        headers=running.headers,
        timeout=60,
    ).raise_for_status()
    requests.post(
        f"{running.url}/api/v1/studies/{study['id']}/approve",
        json={"StudyInstanceUID": study["StudyInstanceUID"]},
        headers=running.headers,
        timeout=300,
    ).raise_for_status()

    # The server is down: the upload job fails, is retried, and is neither lost nor dead.
    def retried() -> dict[str, Any] | None:
        jobs = _upload_jobs(running)
        return jobs[0] if jobs and jobs[0]["attempts"] >= 2 else None

    waiting = wait_until(retried, 300, 0.2, "the upload job to be retried while the server is down")
    assert waiting["state"] in ("FAILED", "QUEUED", "RUNNING")
    assert waiting["last_error"]

    server = start_server()
    done = wait_until(
        lambda: next((j for j in _upload_jobs(running) if j["state"] == "DONE"), None),
        300,
        0.2,
        "the upload job to succeed once the server is up",
    )
    update_id = done["result"]["update_id"]
    client = server_client(server, key, public)
    status = client.wait_for_update(update_id, timeout=300, poll=0.2)
    assert status["state"] in ("ACCEPTED", "REJECTED")  # processed either way: the server decided on it
    assert status["n_slices"] == done["payload"]["n_slices"]
    updates = requests.get(f"{server.url}/api/v1/updates", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert [u["update_id"] for u in updates.json()["updates"]] == [update_id]  # exactly once


def server_client(server: BackgroundServer, key: str, public: str) -> Any:
    """A federation client of the site, for reading its update's status."""
    from federation.client import FederationClient

    return FederationClient(server.url, key, public, timeout=30)
