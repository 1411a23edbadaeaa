"""``laurel review``: open the review station."""

from __future__ import annotations

import typer


def review(node: str = typer.Option("http://127.0.0.1:8080", "--node", help="the node's API URL")) -> None:
    """Open the review station (being built)."""
    typer.echo("the review station is being built", err=True)
    raise typer.Exit(code=1)
