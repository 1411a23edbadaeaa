"""How a running node is asked to reload its configuration, and how it answers: files under
``storage_dir/.reload/`` and SIGHUP.

* A requester (``laurel reload``, the API after saving) writes ``request-<id>.json`` (who asks) and sends
  SIGHUP to the process holding the storage lock (``storage_dir/.node.lock`` holds its PID): the
  supervisor of ``laurel serve``, or ``laurel serve --one-process``. A plain ``kill -HUP`` works too: the
  sender is then named from the signal (its user and PID).
* The supervisor validates the file; a refused one is answered at once (``result-<id>.json`` with the field
  and the reason) and nothing changes. Otherwise it writes the new *generation* number to ``generation``,
  passes SIGHUP to its children (or restarts the intake for a new listener) and waits until each child has
  written ``ack-<child>`` with that number, then answers every request of that reload.
* :func:`request_reload` does the requester's part and waits for the answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dicom_node.core.errors import StartupError
from dicom_node.core.startup import LOCK_NAME

logger = logging.getLogger(__name__)

RELOAD_DIR = ".reload"


class ReloadError(StartupError):
    """The node could not be asked to reload, or did not answer; the message says why."""


@dataclass(frozen=True)
class ReloadRequest:
    """Who asks for a reload; ``audited``: the requester already wrote the audit event (the API does)."""

    id: str
    actor: str
    audited: bool = False


def _folder(storage_dir: Path) -> Path:
    folder = Path(storage_dir) / RELOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------- the requester's side
def node_pid(storage_dir: Path) -> int:
    """The PID of the process that holds the storage lock (the running node), or :class:`ReloadError`."""
    path = Path(storage_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ReloadError(
            f"no Laurel node has run on {storage_dir} (no {LOCK_NAME}); start it with laurel serve"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise ReloadError(f"no Laurel node is running on {storage_dir}; start it with laurel serve")
    finally:
        os.close(fd)
    if not text.isdigit():
        raise ReloadError(f"the node's lock file {path} names no process ({text!r})")
    return int(text)


def request_reload(storage_dir: Path, actor: str, *, audited: bool = False, timeout: float = 60.0) -> dict[str, Any]:
    """Ask the node running on ``storage_dir`` to reload its configuration file; its answer (``outcome``:
    ``applied``, ``unchanged`` or ``refused`` with ``field``/``reason``/``problems``)."""
    pid = node_pid(storage_dir)
    request = ReloadRequest(uuid.uuid4().hex, actor, audited)
    folder = _folder(storage_dir)
    _write_json(folder / f"request-{request.id}.json", asdict(request))
    os.kill(pid, signal.SIGHUP)
    result_path = folder / f"result-{request.id}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _read_json(result_path)
        if result is not None:
            result_path.unlink(missing_ok=True)
            return result
        time.sleep(0.05)
    raise ReloadError(f"the node (pid {pid}) did not answer the reload within {timeout:.0f} s; see its log")


# ---------------------------------------------------------------------- the node's side
def take_requests(storage_dir: Path) -> list[ReloadRequest]:
    """The waiting requests, removed from the folder (oldest first)."""
    requests = []
    for path in sorted(_folder(storage_dir).glob("request-*.json"), key=lambda p: p.stat().st_mtime):
        data = _read_json(path)
        path.unlink(missing_ok=True)
        if data is not None:
            with contextlib.suppress(TypeError):
                requests.append(ReloadRequest(**data))
    return requests


def answer(storage_dir: Path, requests: list[ReloadRequest], result: dict[str, Any]) -> None:
    """Write the outcome of a reload for each of its requests."""
    folder = _folder(storage_dir)
    for request in requests:
        _write_json(folder / f"result-{request.id}.json", result)


def publish_generation(storage_dir: Path, generation: int) -> None:
    """The number of the reload the children are to acknowledge."""
    _write_json(_folder(storage_dir) / "generation.json", {"generation": generation})


def current_generation(storage_dir: Path) -> int:
    """The latest published reload number (0 before any reload)."""
    data = _read_json(Path(storage_dir) / RELOAD_DIR / "generation.json") or {}
    return int(data.get("generation", 0))


def acknowledge(storage_dir: Path, child: str, generation: int) -> None:
    """A child has applied the configuration of ``generation`` (read before it read the file)."""
    _write_json(_folder(storage_dir) / f"ack-{child}.json", {"generation": generation})


def acknowledged(storage_dir: Path, child: str) -> int:
    """The latest generation ``child`` acknowledged."""
    data = _read_json(Path(storage_dir) / RELOAD_DIR / f"ack-{child}.json") or {}
    return int(data.get("generation", 0))


def reset(storage_dir: Path) -> None:
    """Forget the requests, answers and acknowledgements of an earlier run (the node starts at generation 0)."""
    for path in _folder(storage_dir).iterdir():
        path.unlink(missing_ok=True)


def describe_sender(uid: int, pid: int) -> str:
    """``sighup from <user> (pid N)``: who sent a plain SIGHUP."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    return f"sighup from {user} (pid {pid})"


def actor_of(requests: list[ReloadRequest], sender: str) -> str:
    """Who a reload is audited as: the requesters, or the sender of a plain SIGHUP."""
    names = list(dict.fromkeys(r.actor for r in requests))
    return ", ".join(names) if names else sender


class ReloadSignals:
    """SIGHUP of this process, with its sender: blocked and fetched with ``sigtimedwait`` by the main loop
    (the threads started after this inherit the block). A handler stays as a fallback for a thread that
    started before; the sender is then unknown. Children must unblock it (:func:`unblock_sighup`)."""

    def __init__(self) -> None:
        self._fallback = threading.Event()
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self._fallback.set())
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

    def wait(self, timeout: float) -> str | None:
        """Wait up to ``timeout`` s for SIGHUP; who sent it (``None``: none came)."""
        info = signal.sigtimedwait({signal.SIGHUP}, timeout)
        if info is not None:
            return describe_sender(info.si_uid, info.si_pid)
        if self._fallback.is_set():
            self._fallback.clear()
            return "sighup"
        return None


def unblock_sighup() -> None:
    """Undo an inherited block of SIGHUP (a child of a process using :class:`ReloadSignals`)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
