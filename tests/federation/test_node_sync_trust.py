"""The node's ``sync`` job against a federation server that lies: it replays old versions, offers the zoo
package or another key's package under a new version number, or announces a version it then does not send.

The server is a real HTTP server on loopback (a hostile one, so it is ours); the node side is the real
``sync`` job with its registry and the real :class:`FederationClient`. The node takes a package only when
the server's key signed it and its signed manifest is the announced, newer version; a second sync of a
version adds nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dicom_node.core.config import NodeConfig
from dicom_node.core.engine import make_engine
from dicom_node.core.jobs import JobContext
from dicom_node.core.metrics import NodeMetrics
from dicom_node.work.learning import ModelRegistry
from dicom_node.work.learning_jobs import sync
from dicom_node.work.services import NodeServices
from federation.client import FederationClient
from models.package import dumps
from models.signing import generate_keypair, public_key_to_b64, sign


class LyingServer:
    """Announces ``latest`` and serves whatever bytes ``packages[version]`` holds."""

    def __init__(self) -> None:
        self.latest: int | None = 1
        self.packages: dict[int, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/api/v1/models/leg":
                    body = json.dumps({"name": "leg", "latest_version": server.latest}).encode()
                    self._send(200, body, "application/json")
                elif self.path.startswith("/api/v1/models/leg/versions/") and self.path.endswith("/package"):
                    version = int(self.path.split("/")[6])
                    data = server.packages.get(version)
                    self._send(200 if data else 404, data or b"{}", "application/octet-stream")
                else:
                    self._send(404, b"{}", "application/json")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def lying_server() -> Iterator[LyingServer]:
    server = LyingServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_sync_takes_only_the_signed_announced_newer_version(
    lying_server: LyingServer, tmp_path: Path, base_package: Any
) -> None:
    server_key, server_public = generate_keypair()
    other_key, _ = generate_keypair()
    cfg = NodeConfig.load(
        None,
        node={"storage_dir": str(tmp_path / "node")},
        routing=[{"model": "leg", "called_ae": "LAUREL_LEG"}],
        federation={"url": lying_server.url, "server_public_key": public_key_to_b64(server_public)},
        api={"enabled": False},
    )
    engine = make_engine(cfg.node.db_url)
    registry = ModelRegistry(engine, cfg.models_dir, tmp_path / "node" / "key.pem", trusted_keys=[server_public])
    client = FederationClient(lying_server.url, "lrl_key", server_public, timeout=10, retries=0)
    services = NodeServices(config=cfg, engine=engine, metrics=NodeMetrics(), registry=registry, federation=client)
    ctx = JobContext(job_id=1, kind="sync", attempt=1, engine=engine)

    def version(n: int, key: Any = server_key) -> bytes:
        pkg = base_package.with_weights(base_package.weights, version=n, parent_version=n - 1)
        return sign(dumps(pkg), key)

    def revisions() -> list[tuple[str, int, str | None]]:
        return [(r["source"], r["package_version"], r["source_key"]) for r in registry.state("leg")["revisions"]]

    from models.zoo import package_path

    # An honest v2: taken once; announced again, nothing is added (no second copy of 2.4 MB).
    lying_server.latest, lying_server.packages[2] = 2, version(2)
    assert sync(services, {}, ctx)["pulled"] == {"leg": 2}
    assert sync(services, {}, ctx)["pulled"] == {}
    assert revisions() == [("zoo", 1, "zoo"), ("federation", 2, "federation:2")]
    files = sorted((cfg.models_dir / "leg").iterdir())
    # A replay: v3 announced, the signed v2 sent. The zoo package (trusted by its hash, not signed by the
    # server) as v4. Another key's package as v5. None is taken, and each says why.
    lying_server.latest, lying_server.packages[3] = 3, version(2)
    assert "is version 2" in sync(services, {}, ctx)["refused"]["leg"]
    lying_server.latest, lying_server.packages[4] = 4, package_path("leg").read_bytes()
    assert "unsigned" in sync(services, {}, ctx)["refused"]["leg"]
    lying_server.latest, lying_server.packages[5] = 5, version(5, other_key)
    assert "not trusted" in sync(services, {}, ctx)["refused"]["leg"]
    # Going back: an older version announced is not a reason to change anything.
    lying_server.latest = 1
    assert sync(services, {}, ctx)["pulled"] == {}
    assert revisions() == [("zoo", 1, "zoo"), ("federation", 2, "federation:2")]
    assert registry.state("leg")["active_version"] == 2
    assert sorted((cfg.models_dir / "leg").iterdir()) == files  # nothing stored for the refused offers
    engine.dispose()


def test_a_package_larger_than_the_limit_is_never_read_whole(lying_server: LyingServer, base_package: Any) -> None:
    from federation.client import FederationRefused

    _key, public = generate_keypair()
    lying_server.latest, lying_server.packages[2] = 2, b"x" * (3 * 2**20)
    client = FederationClient(lying_server.url, "lrl_key", public, timeout=10, retries=0, max_package_bytes=2**20)
    with pytest.raises(FederationRefused, match="limit 1048576"):
        client.download_bytes("leg", 2)
