"""``laurel model ...`` and ``laurel phantom``: command-line access to the model zoo and the phantom."""

from __future__ import annotations

import typer

from models.phantom.cli import phantom

__all__ = ["model_app", "phantom"]

model_app = typer.Typer(no_args_is_help=True)
