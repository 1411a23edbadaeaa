"""``laurel federation ...``: run the federation server and manage its sites."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
