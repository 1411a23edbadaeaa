"""``laurel token ...``: operator tokens of the node API (printed once, stored hashed)."""

from __future__ import annotations

from pathlib import Path

import typer

token_app = typer.Typer(no_args_is_help=True, help="operator tokens of the node API")

_CONFIG = typer.Option(Path("config/node.yaml"), "--config", "-c", help="node configuration (YAML)")


@token_app.command("create")
def create(
    operator: str = typer.Argument(..., help="the operator's name, as it goes into the audit log and SEGs"),
    config: Path = _CONFIG,
) -> None:
    """Create a bearer token for OPERATOR and print it once; only its hash is stored."""
    from dicom_node.cli import load_config
    from dicom_node.db import make_engine, session_scope
    from dicom_node.tokens import create_token

    cfg = load_config(config)
    with session_scope(make_engine(cfg.node.db_url)) as session:
        try:
            token = create_token(session, operator)
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from exc
    typer.echo(token)
    typer.echo(
        f"(token for {operator.strip()}: shown once, keep it safe; revoke with `laurel token revoke`)",
        err=True,
    )


@token_app.command("revoke")
def revoke(
    operator: str = typer.Argument(..., help="the operator whose tokens to revoke"), config: Path = _CONFIG
) -> None:
    """Revoke every token of OPERATOR."""
    from dicom_node.cli import load_config
    from dicom_node.db import make_engine, session_scope
    from dicom_node.tokens import revoke_tokens

    cfg = load_config(config)
    with session_scope(make_engine(cfg.node.db_url)) as session:
        n = revoke_tokens(session, operator)
    typer.echo(f"revoked {n} token(s) of {operator}")


def register(app: typer.Typer) -> None:
    """Attach ``laurel token`` to the root app."""
    app.add_typer(token_app, name="token")
