"""``laurel phantom``: write a SYNTHETIC MR phantom series with its ground truth."""

from __future__ import annotations

import typer


def phantom() -> None:
    """Write a synthetic phantom series (being built)."""
    typer.echo("the phantom generator is being built", err=True)
    raise typer.Exit(code=1)
