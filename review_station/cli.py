"""``laurel review``: open the review station."""

from __future__ import annotations

from pathlib import Path

import typer


def review(
    node: str | None = typer.Option(
        None, "--node", help="the node's API URL (default: the last node used, else http://127.0.0.1:8080)"
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="LAUREL_TOKEN",
        help="operator token from `laurel token create` (prefer the LAUREL_TOKEN variable: "
        "a command-line token is visible to other users of the machine)",
        show_default=False,
    ),
    open_local: Path | None = typer.Option(
        None, "--open-local", help="view/edit a local volume .npy offline instead (no approval)", exists=True
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="with --open-local: labels .npy (uint8) or phantom .npz", exists=True
    ),
) -> None:
    """Open the review station: worklist, viewer, correction tools, approve/reject."""
    from review_station.app import run

    if labels is not None and open_local is None:
        typer.secho("error: --labels needs --open-local VOLUME", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    try:
        code = run(node, token, open_local, labels)
    except ValueError as exc:  # a malformed --node URL
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    raise typer.Exit(code=code)
