"""`laurel demo` — the README's first command — runs the whole loop end to end (SYNTHETIC phantoms)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_loop_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {**os.environ, "TCP_NODELAY": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "dicom_node", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=REPO,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "SYNTHETIC" in out
    assert out.count("-> approved SEG in PACS") == 2
    assert "federation update ACCEPTED" in out or "federation update REJECTED" in out
    assert "active leg model is federation v" in out
    # Every child process was stopped: none of them still runs with the demo's folder in its arguments.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(workdir) not in ps
