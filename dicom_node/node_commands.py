"""The node's commands: ``serve``, ``status``, ``echo``, ``send``, ``requeue``, ``token``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the node's commands to the root ``laurel`` app."""
