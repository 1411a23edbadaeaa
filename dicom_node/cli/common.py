"""What every command shares: the configuration option, loading it, and logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from dicom_node.core.config import ConfigError, NodeConfig

ConfigOption = typer.Option(Path("config/node.yaml"), "--config", "-c", help="node configuration (YAML)")


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr with timestamps; never patient data (callers log internal ids)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_config(path: Path) -> NodeConfig:
    """Load the node configuration or exit non-zero with the validation message."""
    try:
        return NodeConfig.load(path)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
