"""Processes the demo starts and stops: Orthanc as the PACS, Laurel nodes, the federation server.

Each runs as a child process on loopback ports with ``TCP_NODELAY=1`` in its environment, logs to a file in
the demo folder and is stopped by PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    """Poll ``predicate`` until it returns something truthy; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (requests.RequestException, OSError, ValueError, KeyError) as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({last_exc})" if last_exc else ""))


def laurel_command() -> list[str]:
    """How to run ``laurel`` in a child process with this interpreter."""
    return [sys.executable, "-m", "dicom_node"]


@dataclass
class Child:
    """A child process with its log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        """Start the process (its own process group, so stopping it stops its children too)."""
        env = {**os.environ, "TCP_NODELAY": "1", "PYTHONUNBUFFERED": "1", **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(self.argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise with the log's tail if the process died."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; its log ends:\n{tail}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=grace)
        except ProcessLookupError:
            pass


def orthanc_binary() -> str | None:
    """The Orthanc executable (Debian installs it in /usr/sbin), if installed."""
    return shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)


def orthanc_config(
    folder: Path,
    *,
    dicom_port: int,
    http_port: int,
    ae_title: str,
    modalities: dict[str, tuple[str, str, int]],
) -> Path:
    """Write an Orthanc configuration for a loopback PACS that accepts LABELMAP and BINARY SEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "Laurel demo PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        "DicomModalities": {name: list(m) for name, m in modalities.items()},
        "Plugins": [],
        "StableAge": 60,
        "ConcurrentJobs": 2,
        "HttpTimeout": 60,
        "DicomScuTimeout": 30,
        "LogExportedResources": False,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path
