"""Named fault points: where the restart tests stop a real process between two writes.

Production code marks the dangerous moments of a job (``reach("learn.before_record", stop)``: after the
training, before the row). Nothing happens unless the process was started with ``LAUREL_FAULT_HOLD`` listing
that point (comma-separated) and ``LAUREL_FAULT_DIR`` naming a folder: then the thread that reaches the point
writes ``<point>.reached`` into that folder and waits there. The test sees the marker and stops the process:
SIGKILL kills it at exactly that point; SIGTERM makes the process set ``stop``, and the waiting thread raises
:class:`FaultInterrupted`, as a job cut short by the stop (the caller turns it into its own "interrupted").

It lives in ``models`` because the node and the federation server both use it and ``models`` imports
nothing of ours. It costs one environment lookup when no fault is asked for.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

HOLD_ENV = "LAUREL_FAULT_HOLD"
DIR_ENV = "LAUREL_FAULT_DIR"


class FaultInterrupted(Exception):
    """The process stopped while a thread was held at a fault point."""


def held(point: str) -> bool:
    """Whether this process was asked to hold at ``point``."""
    wanted = os.environ.get(HOLD_ENV) or ""
    return point in {p.strip() for p in wanted.split(",")}


def reach(point: str, stop: threading.Event | None = None) -> None:
    """Mark ``point``; hold there (until ``stop`` is set, then raise) when the test asked for it."""
    if not held(point):
        return
    folder = Path(os.environ.get(DIR_ENV) or ".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{point}.reached").write_text(str(os.getpid()))
    logger.warning("fault point %s reached: holding until the process stops", point)
    event = stop or threading.Event()
    while not event.wait(0.1):
        pass
    raise FaultInterrupted(f"stopped at fault point {point}")
