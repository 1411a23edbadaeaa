"""Who holds a claim: ``host:pid:start`` names one process, and whether it still lives can be told on its host.

A job claimed by a process is recorded with that process's *owner* string (:func:`process_owner`): the host
name, the PID and the process's start time (clock ticks since boot, from ``/proc/<pid>/stat``; ``0`` where
there is no ``/proc``). The start time tells a live process from a later one that got the same PID. Only the
host that ran a process can tell whether it still lives (:func:`owner_alive`); other hosts wait for the
lease to expire.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """One process, as a claim records it."""

    host: str
    pid: int
    start: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner a claim recorded (``None`` for text that is not ``host:pid:start``)."""
        host, _, rest = text.rpartition(":")
        host, _, pid = host.rpartition(":")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), rest)


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot; ``None`` when it does not exist.

    ``"0"`` where the system has no ``/proc`` (the process exists, its start time is unknown).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        return "0" if _pid_exists(pid) else None
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; field 22 is the start time
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_name() -> str:
    """This host's name as claims record it."""
    return socket.gethostname()


@functools.lru_cache(maxsize=8)
def _owner_of(pid: int) -> Owner:
    return Owner(host_name(), pid, process_start_time(pid) or "0")


def process_owner() -> Owner:
    """This process (computed per PID: a forked child is another owner)."""
    return _owner_of(os.getpid())


def owner_alive(owner: Owner) -> bool:
    """Whether ``owner`` (a process of this host) still runs: its PID exists with the same start time."""
    start = process_start_time(owner.pid)
    if start is None:
        return False
    return owner.start in ("0", start) or start == "0"
