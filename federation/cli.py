"""``laurel federation ...``: run the federation server and manage its sites."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from federation.server.auth import SiteKeys
    from federation.server.config import FederationConfig

app = typer.Typer(no_args_is_help=True)

ConfigOption = typer.Option(
    Path("config/federation.yaml"), "--config", "-c", help="federation server configuration (YAML)"
)


def _config(path: Path) -> FederationConfig:
    from federation.server.config import ConfigError, FederationConfig

    try:
        return FederationConfig.load(path)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc


def _keys(path: Path) -> SiteKeys:
    from federation.server.auth import SiteKeys
    from federation.server.registry import Registry
    from federation.server.tables import make_engine

    cfg = _config(path)
    return SiteKeys(Registry(make_engine(cfg.db_url), cfg.data_dir))


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def serve(config: Path = ConfigOption, verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run the federation server (API, dashboard, update worker) until interrupted."""
    from federation.server.app import serve as run

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run(_config(config))


@app.command("add-site")
def add_site(
    name: str = typer.Argument(..., help="the site (hospital) name"),
    models: str | None = typer.Option(None, "--models", help="comma-separated models it may use (default: all)"),
    config: Path = ConfigOption,
) -> None:
    """Add a site and print its API key ONCE (the server keeps only a hash)."""
    from federation.server.registry import Conflict

    allowed = None if models is None else [m.strip() for m in models.split(",") if m.strip()]
    try:
        site, key = _keys(config).add_site(name, allowed)
    except (Conflict, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(key)
    typer.secho(
        f"site {site.name} added (models: {', '.join(site.models) if site.models else 'all'}). "
        "The key above is "
        "shown only now: give it to the site, to be set in the variable named by federation.api_key_env.",
        err=True,
    )


@app.command("rotate-key")
def rotate_key(name: str = typer.Argument(...), config: Path = ConfigOption) -> None:
    """Issue a new key to a site (the old one stops working) and print it once."""
    from federation.server.registry import NotFound

    try:
        _site, key = _keys(config).rotate_key(name)
    except NotFound as exc:
        raise _fail(str(exc)) from exc
    typer.echo(key)


@app.command("revoke-site")
def revoke_site(name: str = typer.Argument(...), config: Path = ConfigOption) -> None:
    """Revoke a site's key: its next request gets 401."""
    from federation.server.registry import NotFound

    try:
        site = _keys(config).revoke(name)
    except NotFound as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"site {site.name} revoked")


@app.command("list-sites")
def list_sites(config: Path = ConfigOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """The sites, their permissions and whether they are revoked (never their keys)."""
    sites = _keys(config).sites()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "models": s.models,
                        "revoked": s.revoked,
                        "created_at": s.created_at.isoformat(),
                        "last_seen_at": None if s.last_seen_at is None else s.last_seen_at.isoformat(),
                    }
                    for s in sites
                ],
                indent=2,
            )
        )
        return
    for s in sites:
        seen = "never" if s.last_seen_at is None else s.last_seen_at.strftime("%Y-%m-%d %H:%M")
        status = "REVOKED" if s.revoked else "active"
        typer.echo(f"{s.name:24} {status:8} models={','.join(s.models) if s.models else 'all':20} last seen {seen}")


@app.command()
def keygen(config: Path = ConfigOption) -> None:
    """Create the server's Ed25519 signing key if absent and print its public key (base64)."""
    from federation.server.signing import load_or_create

    typer.echo(load_or_create(_config(config).signing_key_path).public_b64())


@app.command("public-key")
def public_key(
    config: Path = ConfigOption, pem: bool = typer.Option(False, "--pem", help="PEM instead of base64")
) -> None:
    """Print the server's public key for the nodes' ``federation.server_public_key``."""
    from federation.server.signing import load_or_create

    try:
        key = load_or_create(_config(config).signing_key_path, create=False)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(key.public_pem().rstrip() if pem else key.public_b64())


@app.command()
def audit(
    config: Path = ConfigOption,
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="how many entries, newest first"),
    action: str | None = typer.Option(None, "--action", help="only this action, e.g. site.revoke"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The audit log: sites added, re-keyed, revoked; versions published; updates rejected (newest first)."""
    from federation.server.audit import entries
    from federation.server.registry import Registry
    from federation.server.tables import make_engine

    cfg = _config(config)
    rows = entries(Registry(make_engine(cfg.db_url), cfg.data_dir).sessions, limit=limit, action=action)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in rows], indent=2))
        return
    for e in rows:
        detail = json.dumps(e.detail, sort_keys=True) if e.detail else ""
        typer.echo(f"{e.at:%Y-%m-%d %H:%M:%S} {e.actor:16} {e.action:16} {e.target:24} {detail}")
