"""What can stop the node from starting, said in one line: the storage lock and plain-words errors.

* :class:`StorageLock`: ``laurel serve`` holds an exclusive ``flock`` on ``storage_dir/.node.lock`` for its
  whole life, so a second node (or a second ``laurel serve`` typed by mistake) on the same storage folder
  stops at once with the PID of the first instead of sharing the index and the files with it. The kernel
  drops the lock when the process dies, even by SIGKILL: there is no stale lock to clean up.
* :func:`explain` turns the errors a sysadmin can fix (locked or corrupt database, unreadable or full
  storage, a database server that does not answer) into one sentence that says what is wrong and what to
  do; ``laurel`` prints it and exits non-zero without a traceback. Other errors keep their traceback: they
  are bugs to report.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from dicom_node.core.errors import ConfigError, SchemaError, StartupError

__all__ = ["StartupError", "StorageLock", "database_label", "explain"]

LOCK_NAME = ".node.lock"


class StorageLock:
    """An exclusive lock on a node's storage folder (see the module docstring)."""

    def __init__(self, storage_dir: Path) -> None:
        self.path = Path(storage_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StartupError` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"another Laurel node (pid {holder}) is already serving {self.path.parent}; stop it first, "
                "or give this node its own node.storage_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (also done by the kernel when the process ends)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def database_label(url: str) -> str:
    """A database URL fit for a message: the file of a SQLite index, else the URL without its password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database)
    return parsed.render_as_string(hide_password=True)


def _full(database: str | None) -> bool:
    """Whether the filesystem of a SQLite index has (almost) no space left."""
    if not database:
        return False
    from sqlalchemy.engine import make_url

    parsed = make_url(database)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return False
    try:
        stats = os.statvfs(Path(parsed.database).parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 256 * 1024


def explain(exc: BaseException, database: str | None = None) -> str | None:
    """One sentence for an error a sysadmin can fix, or ``None`` for anything else (a bug).

    ``database`` (a URL) names the index in database messages.
    """
    from sqlalchemy.exc import DatabaseError, OperationalError

    if isinstance(exc, StartupError | SchemaError | ConfigError):
        return str(exc)
    if isinstance(exc, OperationalError | DatabaseError):
        text = str(getattr(exc, "orig", exc)).lower()
        where = f" {database_label(database)}" if database else ""
        if "locked" in text or "busy" in text:
            return (
                f"the index database{where} is locked by another process (another node, a `laurel` command or "
                "a backup holding it): wait for it or stop it, then try again"
            )
        if "disk is full" in text or "disk full" in text or "no space" in text or _full(database):
            return f"the disk that holds the index database{where} is full: free some space, then try again"
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (
                f"the index database{where} is damaged (not a readable SQLite database): restore it from your "
                "backup of node.storage_dir, or move it away to start with an empty index"
            )
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            return (
                f"the index database{where} cannot be opened for writing: check that node.storage_dir exists and "
                "that this user may write to it"
            )
        if "disk i/o error" in text:
            return (
                f"the index database{where} could not be read or written (disk I/O error): check the disk that "
                "holds node.storage_dir (free space, errors in the system log)"
            )
        if "authentication failed" in text or "no pg_hba.conf entry" in text:
            return (
                f"the database server{where} refused the login: check the user and password in "
                "node.database_url and the server's pg_hba.conf"
            )
        if "database" in text and "does not exist" in text:
            return f"the database{where} does not exist: create it (docs/sysadmin.md, PostgreSQL), then try again"
        if "permission denied" in text:
            return (
                f"the database role of{where} may not create or change the index tables: make it the owner of "
                "the database (docs/sysadmin.md, PostgreSQL)"
            )
        if "connection" in text or "could not connect" in text or "refused" in text:
            return f"the database server{where} does not answer: check node.database_url and that it is running"
        return None
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return f"the disk is full{where}: free some space, then try again"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"no permission to write{where}: make node.storage_dir writable by the user that runs Laurel"
        if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            return f"a path Laurel needs is in the way{where}: node.storage_dir must be a folder (or not exist yet)"
        if exc.errno == errno.ENOENT:
            return f"a file or folder Laurel needs is missing{where}"
    return None
