"""``laurel demo``: the whole loop on embedded defaults (SYNTHETIC phantom data)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    workdir: Path = typer.Option(Path("var/demo"), "--workdir", help="folder for everything the demo makes"),
    keep: bool = typer.Option(False, "--keep", help="leave the servers running at the end (Ctrl+C stops them)"),
) -> None:
    """Run the whole loop: PACS → node → draft → approval → PACS, learning, federation merge, sync."""
    from dicom_node.demo.run import run_demo

    try:
        run_demo(workdir.resolve(), keep=keep)
    except (RuntimeError, TimeoutError) as exc:
        typer.secho(f"demo failed: {exc}", fg=typer.colors.RED, err=True)
        typer.secho(f"logs of every process are in {workdir}/", err=True)
        raise typer.Exit(code=1) from exc


__all__ = ["demo"]
