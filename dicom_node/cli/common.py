"""What every command shares: the configuration option, loading it, and logging."""

from __future__ import annotations

from pathlib import Path

import typer

from dicom_node.core.config import ConfigError, NodeConfig
from dicom_node.core.logs import configure_logging

__all__ = ["ConfigOption", "configure_logging", "load_config"]

ConfigOption = typer.Option(Path("config/node.yaml"), "--config", "-c", help="node configuration (YAML)")


def load_config(path: Path) -> NodeConfig:
    """Load the node configuration or exit non-zero with the validation message."""
    try:
        return NodeConfig.load(path)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
