"""``laurel federation serve`` as its own process: bootstraps from the zoo, serves, stops on SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from federation.client import FederationClient
from tests.peers import wait_until

pytestmark = pytest.mark.slow  # a fresh Python with TensorFlow, and the zoo model's validation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _laurel(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", "federation", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_serve_bootstraps_from_the_zoo_and_stops_on_sigterm(
    tmp_path: Path, reference_dir: Path, base_package: Any, base_dice: float
) -> None:
    port = _free_port()
    config = tmp_path / "federation.yaml"
    threshold = max(0.0, base_dice - 0.1)
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, data_dir: {tmp_path / 'data'}}}\n"
        f"validation: {{validation_dir: {reference_dir}, threshold: {threshold:.3f}}}\n"
        "models: [leg]\n"
    )
    key = _laurel("add-site", "hospital-a", config=config).stdout.strip()
    public = _laurel("keygen", config=config).stdout.strip()
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "federation", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return requests.get(f"{url}/health", timeout=2).status_code == 200

        wait_until(healthy, 240, 0.2, "the federation server to become healthy")
        client = FederationClient(url, key, public, timeout=30)
        assert client.latest_version("leg") == base_package.version
        pkg = client.download("leg")
        assert pkg.version == base_package.version
        assert client.health()["public_key"] == public
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells how the process ended
    assert proc.returncode in (0, -15), out
    assert "Application shutdown complete" in out
    assert key not in out and key.split("_", 2)[2] not in out
    assert "bootstrapped leg" in out
