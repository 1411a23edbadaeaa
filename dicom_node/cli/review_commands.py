"""``laurel token ...``: tokens of the node API with a role (printed once, stored hashed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

token_app = typer.Typer(no_args_is_help=True, help="tokens of the node API (role operator or admin)")

_CONFIG = typer.Option(Path("config/node.yaml"), "--config", "-c", help="node configuration (YAML)")


@token_app.command("create")
def create(
    operator: str = typer.Argument(..., help="the operator's name, as it goes into the audit log and SEGs"),
    config: Path = _CONFIG,
    role: str = typer.Option(
        "operator", "--role", help="operator (review only) or admin (also jobs, dead letters, models, audit, console)"
    ),
) -> None:
    """Create a bearer token for OPERATOR with a role and print it once; only its hash is stored."""
    from dicom_node.cli.common import load_config
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token

    cfg = load_config(config)
    with session_scope(cfg.node.engine()) as session:
        try:
            token = create_token(session, operator, role)
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from exc
    typer.echo(token)
    typer.echo(
        f"({role} token for {operator.strip()}: shown once, keep it safe; revoke with `laurel token revoke`)",
        err=True,
    )


@token_app.command("revoke")
def revoke(
    operator: str = typer.Argument(..., help="the operator whose tokens to revoke"), config: Path = _CONFIG
) -> None:
    """Revoke every token of OPERATOR."""
    from dicom_node.cli.common import load_config
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import revoke_tokens

    cfg = load_config(config)
    with session_scope(cfg.node.engine()) as session:
        n = revoke_tokens(session, operator)
    typer.echo(f"revoked {n} token(s) of {operator}")


def _registry(config: Path) -> Any:
    from dicom_node.cli.common import load_config
    from dicom_node.work.learning import ModelRegistry

    cfg = load_config(config)
    return ModelRegistry(cfg.node.engine(), cfg.models_dir, cfg.node.storage_dir / "node_signing_key.pem")


def _show_state(state: dict[str, Any]) -> None:
    typer.echo(
        f"{state['name']}: active revision {state['active_revision']} (v{state['active_version']}, "
        f"federation v{state['federation_version']}){' PINNED' if state['pinned'] else ''}"
    )
    for rev in state["revisions"]:
        verdict = {"accepted": "", "rejected": "REJECTED "}.get(rev.get("verdict") or "", "")
        typer.echo(
            f"  r{rev['revision']:<4} v{rev['package_version']:<4} {rev['source']:<10} {verdict}{rev['note'] or ''}"
        )
        if rev.get("verdict_reason"):
            typer.echo(f"        {rev['verdict_reason']}")
    if "site_cases" in state:
        kept = state["site_cases"]
        typer.echo(f"  kept on site: {kept['reference']} reference series, {kept['replay']} replay series")


def pin(
    name: str = typer.Argument(..., help="model name, e.g. leg"),
    revision: int | None = typer.Option(None, "--revision", "-r", help="revision to pin (default: the active one)"),
    config: Path = _CONFIG,
) -> None:
    """Pin a model revision on this node: learning and federation sync no longer replace it."""
    _run_registry(lambda reg: reg.pin(name, revision), config)


def unpin(name: str = typer.Argument(...), config: Path = _CONFIG) -> None:
    """Unpin a model: the newest revision that the guard did not reject becomes active again."""
    _run_registry(lambda reg: reg.unpin(name), config)


def rollback(name: str = typer.Argument(...), revision: int = typer.Argument(...), config: Path = _CONFIG) -> None:
    """Make an older revision active (and pin it)."""
    _run_registry(lambda reg: reg.rollback(name, revision), config)


def revisions(name: str = typer.Argument(...), config: Path = _CONFIG) -> None:
    """The node's revisions of a model, which one is active, each learned revision's verdict on the
    reference set, and how many approved series are kept for guarded learning."""
    from dicom_node.work.site_cases import SiteCaseStore

    def show(reg: Any) -> dict[str, Any]:
        state: dict[str, Any] = reg.state(name)
        state["site_cases"] = SiteCaseStore(reg.engine, reg.models_dir).counts(name)
        return state

    _run_registry(show, config)


def _run_registry(action: Any, config: Path) -> None:
    from dicom_node.work.learning import RegistryError

    try:
        state = action(_registry(config))
    except RegistryError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    _show_state(state)


def console_link(
    operator: str = typer.Argument(..., help="an admin, as named in `laurel token create NAME --role admin`"),
    config: Path = _CONFIG,
    page: str = typer.Option("/console", "--page", help="the console page to open after logging in"),
) -> None:
    """Print a one-time console login URL for OPERATOR's admin token (valid two minutes, once)."""
    from urllib.parse import urlencode

    from dicom_node.api.console.auth import console_key, login_link_code
    from dicom_node.cli.common import load_config
    from dicom_node.core.db import session_scope

    cfg = load_config(config)
    with session_scope(cfg.node.engine()) as session:
        try:
            code = login_link_code(session, console_key(cfg.node.storage_dir), operator)
        except LookupError as exc:
            typer.secho(f"error: {exc.args[0]}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from exc
    host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::") else cfg.api.host
    typer.echo(f"http://{host}:{cfg.api.port}/console/login/once?{urlencode({'code': code, 'next': page})}")


def register(app: typer.Typer, model_app: typer.Typer) -> None:
    """Attach ``laurel token`` and the node's ``laurel model pin|unpin|rollback|revisions``."""
    app.add_typer(token_app, name="token")
    app.command("console-link", help="print a one-time login URL of the node console for an admin")(console_link)
    model_app.command("pin")(pin)
    model_app.command("unpin")(unpin)
    model_app.command("rollback")(rollback)
    model_app.command("revisions")(revisions)
    from dicom_node.cli.model_install import install_command

    model_app.command("install", help="install a signed package on this node (a revision routing can name)")(
        install_command
    )
