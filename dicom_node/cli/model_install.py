"""``laurel model install``: a signed package from ``laurel model create`` becomes a revision of this node."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer


def _die(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def install_command(
    package: Path = typer.Argument(..., help="a signed package file (from `laurel model create`)"),
    public_keys: list[Path] = typer.Option(..., "--public-key", help="PEM key that signed it (repeatable)"),
    config: Path = typer.Option(Path("config/node.yaml"), "--config", "-c", help="node configuration (YAML)"),
) -> None:
    """Install a signed package on this node: it becomes a revision the node's routing can name."""
    from dicom_node.core.config import NodeConfig
    from dicom_node.core.errors import ConfigError
    from models.create.build import read_public_keys

    try:
        state = install_into_node(NodeConfig.load(config), package, read_public_keys(public_keys))
    except ConfigError as exc:
        raise _die(exc) from exc
    except (ValueError, OSError) as exc:
        raise _die(exc) from exc
    typer.echo(
        f"{state['name']}: revision {state['installed_revision']} installed; active revision {state['active_revision']}"
        f"{' (PINNED: the model stays on its pinned revision)' if state['pinned'] else ''}"
    )


def install_into_node(cfg: Any, package: Path, public_keys: Sequence[Any]) -> dict[str, Any]:
    """Make a signed package a revision of the node's registry (``cfg``: the node's ``NodeConfig``): verified
    with ``public_keys``, then stored re-signed by the node's own key, active unless the model is pinned."""
    from dicom_node.work.learning import ModelRegistry
    from models.package import load
    from models.signing import sha256_hex

    data = Path(package).read_bytes()
    pkg = load(data, list(public_keys), allow_zoo=False)
    registry = ModelRegistry(cfg.node.engine(), cfg.models_dir, cfg.node.storage_dir / "node_signing_key.pem")
    if pkg.name in registry.names():
        _rev, current = registry.active(pkg.name)
        if current.family_id != pkg.family_id:
            raise ValueError(
                f"this node already has a model named {pkg.name!r} of another family; create yours under another name"
            )
    rev = registry.add(
        pkg,
        source="local",
        parent_revision=None,
        note=f"installed {Path(package).name}",
        source_key=f"install:{sha256_hex(data)}",
    )
    state: dict[str, Any] = registry.state(pkg.name)
    state["installed_revision"] = rev.revision
    return state
