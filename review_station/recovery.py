"""Corrections kept on this computer when they could not reach the node, and the last-resort exception hook.

An unhandled exception in a Qt slot would otherwise end the application (PyQt5 aborts) and take the
radiologist's corrections with it. :func:`install_excepthook` logs the error (type and traceback, no message:
messages can carry patient data), saves the corrections of the open study here and says so; the next time one
of those series is opened, the station offers them again. Files are named by SeriesInstanceUID:
``<uid>.npy`` (the uint8 labels) and ``<uid>.json`` (study and series id, node, time; no patient data).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]


def default_folder() -> Path:
    """``<AppDataLocation>/recovery`` of the application (created on first use)."""
    from PyQt5.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.AppDataLocation) or str(Path.home() / ".laurel-review")
    return Path(base) / "recovery"


@dataclass(frozen=True)
class Kept:
    """Corrections of one series kept on disk."""

    uid: str
    labels: np.ndarray
    meta: dict[str, Any]

    @property
    def saved_at(self) -> str:
        """When they were kept (local time, as written)."""
        return str(self.meta.get("saved_at", "an unknown time"))


class RecoveryStore:
    """A folder of corrections that did not reach the node."""

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder

    @property
    def folder(self) -> Path:
        """The folder (the application's data folder unless given)."""
        if self._folder is None:
            self._folder = default_folder()
        return self._folder

    def _paths(self, uid: str) -> tuple[Path, Path]:
        name = re.sub(r"[^0-9A-Za-z._-]", "_", uid)[:200] or "unnamed"
        return self.folder / f"{name}.npy", self.folder / f"{name}.json"

    def save(self, uid: str, labels: np.ndarray, **meta: Any) -> Path:
        """Write the labels of series ``uid`` (through temporary files, then renamed into place)."""
        npy, js = self._paths(uid)
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + ".part")
        with tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(labels, dtype=np.uint8), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(npy)
        info = {"SeriesInstanceUID": uid, "saved_at": datetime.now().strftime("%Y-%m-%d %H:%M:%S"), **meta}
        tmpj = js.with_name(js.name + ".part")
        tmpj.write_text(json.dumps(info, indent=1), encoding="utf-8")
        tmpj.replace(js)
        log.info("kept the corrections of a series in the recovery folder")  # no UID: it identifies a patient
        return npy

    def load(self, uid: str) -> Kept | None:
        """The corrections kept for series ``uid``, or None (also when the file cannot be read)."""
        npy, js = self._paths(uid)
        if not npy.exists():
            return None
        try:
            labels = np.load(npy, allow_pickle=False)
            meta = json.loads(js.read_text(encoding="utf-8")) if js.exists() else {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read kept corrections: %s", type(exc).__name__)
            return None
        if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 3:
            return None
        return Kept(uid, labels, meta if isinstance(meta, dict) else {})

    def discard(self, uid: str) -> None:
        """Forget the corrections kept for ``uid``."""
        for p in self._paths(uid):
            p.unlink(missing_ok=True)


class Rescuer(Protocol):
    """What the hook asks of the window."""

    def rescue_edits(self, error_name: str) -> None:
        """Keep the open corrections on disk and tell the operator."""


def install_excepthook(window: Rescuer) -> ExceptHook:
    """Make an unhandled exception keep the edits instead of ending the application; returns the old hook."""
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
            return
        where = "".join(traceback.format_tb(tb)) if tb is not None else ""
        log.critical("unhandled %s in the review station\n%s", exc_type.__name__, where)
        try:
            window.rescue_edits(exc_type.__name__)
        except Exception as second:  # the hook must never raise
            log.critical("could not keep the corrections after the error: %s", type(second).__name__)

    sys.excepthook = hook
    return previous
