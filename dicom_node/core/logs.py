"""Logging set-up shared by every process of the node."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbose: bool = False, *, process: str | None = None) -> None:
    """Log to stderr with timestamps (and the process role, in a child of ``laurel serve``); never patient
    data (callers log internal ids)."""
    role = f"[{process}] " if process else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)-7s {role}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every request, APScheduler every run (and every run it coalesces), Alembic every plugin
    # at INFO; the node logs what matters.
    for chatty, level in (
        ("pynetdicom", logging.WARNING),
        ("apscheduler", logging.ERROR),
        ("alembic", logging.WARNING),
    ):
        library_logger = logging.getLogger(chatty)
        if library_logger.level == logging.NOTSET:
            library_logger.setLevel(level)
