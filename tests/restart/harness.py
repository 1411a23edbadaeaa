"""The real processes the restart tests stop and start again: a whole node and the federation server.

Each runs as ``python -m dicom_node …`` with a generated configuration, ``TCP_NODELAY=1`` and, when asked,
named fault points to hold at (:mod:`models.faults`): the test waits for the point's marker file, then sends
SIGTERM or SIGKILL, starts the process again without the hold, and checks the end state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.peers import PEER_ENV, REPO, ManagedProcess, echo_ok, free_port, port_open, wait_until


def laurel(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a ``laurel`` command to its end; its standard output (raises with stderr on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "dicom_node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**PEER_ENV, "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"laurel {' '.join(args)} failed: {done.stderr}"
    return done.stdout


class HeldProcess(ManagedProcess):
    """A ``laurel`` server that can be started holding at fault points and stopped by a chosen signal."""

    def __init__(self, workdir: Path, name: str) -> None:
        super().__init__(workdir, name)
        self.fault_dir = self.workdir / "faults"
        self.extra_env: dict[str, str] = {}

    def _start(self, argv: Sequence[str], hold: Sequence[str]) -> None:
        for marker in self.fault_dir.glob("*.reached"):
            marker.unlink()
        env = {**PEER_ENV, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **self.extra_env}
        if hold:
            env["LAUREL_FAULT_HOLD"] = ",".join(hold)
            env["LAUREL_FAULT_DIR"] = str(self.fault_dir)
        with self.log_path.open("a") as log:
            log.write(f"\n===== start (hold: {', '.join(hold) or 'nothing'}) =====\n")
        self._spawn([sys.executable, "-m", "dicom_node", *argv], env)

    def wait_point(self, point: str, timeout: float = 240) -> None:
        """Wait until the process holds at ``point``."""
        marker = self.fault_dir / f"{point}.reached"
        wait_until(
            lambda: self._alive_or_fail() and marker.exists(), timeout, 0.1, f"{self.name} to reach fault point {point}"
        )

    def _alive_or_fail(self) -> bool:
        if not self.alive:
            raise AssertionError(f"{self.name} exited; its log ends:\n{self.log()[-3000:]}")
        return True

    def stop_with(self, sig: signal.Signals, timeout: float = 60) -> None:
        """Stop the process with ``sig`` (SIGTERM: a graceful stop; SIGKILL: a crash) and wait for it."""
        assert self.proc is not None, f"{self.name} is not running"
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout)
        self.proc = None


class NodeServer(HeldProcess):
    """``laurel serve``: the whole node (SCP, jobs, API) with an admin token."""

    def __init__(self, workdir: Path, settings: dict[str, Any], env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, "node")
        self.settings = settings
        self.extra_env = dict(env or {})
        self.config_path = self.workdir / "node.yaml"
        self.write_config()
        self.token = laurel(
            "token", "create", "Dr Restart", "--role", "admin", "--config", str(self.config_path)
        ).strip()

    def write_config(self) -> None:
        """Write the settings as the node's YAML configuration."""
        self.config_path.write_text(yaml.safe_dump(self.settings))

    @property
    def port(self) -> int:
        """The node's DICOM port."""
        return int(self.settings["node"]["port"])

    @property
    def storage_dir(self) -> Path:
        """The node's storage folder."""
        return Path(self.settings["node"]["storage_dir"])

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.settings['api']['port']}"

    def start(self, hold: Sequence[str] = (), timeout: float = 120) -> NodeServer:
        """Start the node (holding at ``hold``) and wait until it answers C-ECHO and HTTP."""
        self._start(["serve", "--config", str(self.config_path)], hold)
        calling = next(p["ae_title"] for p in self.settings["peers"] if p.get("send_to_us", True))
        wait_until(
            lambda: (
                self._alive_or_fail()
                and port_open(self.port)
                and echo_ok(self.port, self.settings["node"]["ae_title"], calling)
                and requests.get(self.url + "/health", timeout=5).ok
            ),
            timeout,
            0.2,
            f"the node on port {self.port} (log: {self.log_path})",
        )
        return self

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An authenticated API request."""
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=120, **kwargs)

    def engine(self) -> Any:
        """An engine on the node's index (for assertions)."""
        from dicom_node.core.config import NodeConfig
        from dicom_node.core.engine import make_engine

        return make_engine(NodeConfig.load(self.config_path).node.db_url)


class FederationServer(HeldProcess):
    """``laurel federation serve`` with a generated configuration and its sites' keys."""

    def __init__(self, workdir: Path, reference_dir: Path, *, threshold: float, tolerance: float = 0.5) -> None:
        super().__init__(workdir, "federation")
        self.port = free_port()
        self.config_path = self.workdir / "federation.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "server": {"host": "127.0.0.1", "port": self.port, "data_dir": str(self.workdir / "data")},
                    "validation": {
                        "validation_dir": str(reference_dir),
                        "threshold": threshold,
                        "tolerance": tolerance,
                    },
                    "models": ["leg"],
                }
            )
        )
        self.public_key = laurel("federation", "keygen", "--config", str(self.config_path)).strip()

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def add_site(self, name: str) -> str:
        """A new site's API key."""
        return laurel("federation", "add-site", name, "--config", str(self.config_path)).strip()

    def start(self, hold: Sequence[str] = (), timeout: float = 240) -> FederationServer:
        """Start the server (holding at ``hold``) and wait until it is healthy."""
        self._start(["federation", "serve", "--config", str(self.config_path)], hold)
        wait_until(
            lambda: self._alive_or_fail() and requests.get(self.url + "/health", timeout=5).ok,
            timeout,
            0.2,
            f"the federation server on {self.url} (log: {self.log_path})",
        )
        return self

    def client(self, key: str) -> Any:
        """A federation client of one site."""
        from federation.client import FederationClient

        return FederationClient(self.url, key, self.public_key, timeout=60, retries=2, backoff=0.1)
