"""What a sysadmin sees when the node cannot start or a command cannot write: one line, a non-zero exit,
no traceback. Each case makes the real condition (a damaged index, a locked one, a second node on the same
storage, storage that is a file or not writable, a full disk) and runs the real ``laurel`` command."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.peers import PEER_ENV, REPO, NodeProcess, node_settings


def _config(tmp_path: Path, storage: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"node": {"storage_dir": str(storage)}, "api": {"enabled": False}}))
    return path


def _laurel(
    *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "dicom_node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**PEER_ENV, "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_damaged_index_is_named_with_what_to_do(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    storage.mkdir()
    (storage / "laurel.db").write_bytes(b"this is not a database, just some bytes " * 100)
    config = _config(tmp_path, storage)
    for command in (["status"], ["token", "create", "Dr A"], ["serve"]):
        line = _one_line_error(_laurel(*command, "--config", str(config)), "damaged", "backup")
        assert str(storage / "laurel.db") in line


def test_a_locked_index_says_so(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    config = _config(tmp_path, storage)
    assert _laurel("token", "create", "Dr A", "--config", str(config)).returncode == 0
    holder = sqlite3.connect(storage / "laurel.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing (a stuck tool, a second node)
        done = _laurel(
            "token", "create", "Dr B", "--config", str(config), env={"LAUREL_NODE__DATABASE_BUSY_SECONDS": "0.5"}
        )
        _one_line_error(done, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_second_node_on_the_same_storage_stops_at_once(tmp_path: Path) -> None:
    settings = node_settings(tmp_path)
    first = NodeProcess(tmp_path / "first", settings).start()
    try:
        other_port = {"LAUREL_NODE__PORT": str(first.port + 1 if first.port < 65535 else first.port - 1)}
        done = _laurel("serve", "--config", str(first.config_path), env=other_port)
        _one_line_error(done, "another Laurel node", f"pid {first.pid}", str(first.storage_dir))
        assert first.alive
    finally:
        first.stop()
    # The kernel drops the lock with the process, even after SIGKILL: no stale lock to clean up.
    again = NodeProcess(tmp_path / "first", settings).start()
    again.kill()
    NodeProcess(tmp_path / "first", settings).start().stop()


def test_storage_that_is_a_file_is_named(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    storage.write_text("not a folder")
    config = _config(tmp_path, storage)
    for command in (["serve"], ["token", "create", "Dr A"]):
        _one_line_error(_laurel(*command, "--config", str(config)), "storage_dir")


def test_storage_this_user_may_not_write_is_named(tmp_path: Path) -> None:
    storage = tmp_path / "store"
    storage.mkdir()
    config = _config(tmp_path, storage)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: run the command as nobody
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop root")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        os.chmod(tmp_path, 0o755)  # noqa: S103 - nobody must reach the config to run at all
        config.chmod(0o644)
        storage.chmod(0o755)  # owned by root: nobody may read, not write
    else:
        storage.chmod(0o500)
    for command in (["serve"], ["token", "create", "Dr A"]):
        _one_line_error(_laurel(*command, "--config", str(config), prefix=prefix), "writ")


def test_a_full_disk_on_token_create_is_named(tmp_path: Path) -> None:
    """A real full filesystem: a 2 MiB tmpfs in a private mount namespace, filled up after the index exists."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is needed for a private tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    storage = mount / "store"
    config = _config(tmp_path, storage)
    laurel = f"{sys.executable} -m dicom_node"
    script = (
        f"mount -t tmpfs -o size=2m tmpfs {mount} || exit 77\n"
        f"{laurel} token create 'Dr A' --config {config} >/dev/null || exit 78\n"
        f"dd if=/dev/zero of={mount}/fill bs=4k 2>/dev/null\n"
        f"exec {laurel} token create 'Dr B' --config {config}\n"
    )
    done = subprocess.run(
        [unshare, "--mount", "--map-root-user", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**PEER_ENV, "PYTHONPATH": str(REPO)},
        check=False,
    )
    if done.returncode == 77:
        pytest.skip(f"this machine does not allow a private tmpfs mount: {done.stderr.strip()}")
    assert done.returncode != 78, done.stderr
    _one_line_error(done, "full")
