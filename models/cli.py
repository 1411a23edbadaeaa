"""``laurel model ...`` and ``laurel phantom``: command-line access to the model zoo and the phantom."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from models.phantom.cli import phantom

__all__ = ["model_app", "phantom"]

logger = logging.getLogger(__name__)

model_app = typer.Typer(no_args_is_help=True)


@model_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The default models: definitions and the shipped packages with their Dice."""
    from models.zoo import DEFINITIONS, list_packages

    shipped = {row["name"]: row for row in list_packages()}
    rows: list[dict[str, Any]] = []
    for name, defn in DEFINITIONS.items():
        row = shipped.get(name, {})
        rows.append(
            {
                "name": name,
                "region": defn.region,
                "version": row.get("version"),
                "size": row.get("size"),
                "payload_sha256": row.get("payload_sha256"),
                "dice_pd_median": row.get("dice_pd_median"),
                "dice_t1_median": row.get("dice_t1_median"),
                "shipped": bool(row.get("present")),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':8} {'region':6} {'version':>7} {'size':>10} {'Dice PD':>8} {'Dice T1':>8}  sha256")
    for r in rows:
        size = f"{r['size'] / 1e6:.2f} MB" if r["size"] else "-"
        sha = (r["payload_sha256"] or "not shipped")[:16]
        typer.echo(
            f"{r['name']:8} {r['region']:6} {r['version'] if r['version'] is not None else '-':>7} {size:>10} "
            f"{_fmt(r['dice_pd_median']):>8} {_fmt(r['dice_t1_median']):>8}  {sha}"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@model_app.command("show")
def show(name_or_file: str = typer.Argument(..., help="a default model name (leg, thigh) or a package file")) -> None:
    """The manifest of a package: identity, versions, sizes and whether it is trusted (reads JSON only)."""
    from models.package import PackageError, read_manifest
    from models.zoo import DEFINITIONS, package_path

    try:
        path = package_path(name_or_file) if name_or_file in DEFINITIONS else Path(name_or_file)
        info = read_manifest(path.read_bytes())
    except (OSError, PackageError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    info["file"] = str(path)
    typer.echo(json.dumps(info, indent=2, sort_keys=True))


@model_app.command("train")
def train(
    region: str = typer.Option(..., "--region", help="leg or thigh"),
    cohort_name: str = typer.Option(None, "--cohort", help="phantom cohort (default: pretrain_pd_<region>)"),
    out: Path = typer.Option(..., "--out", help="package file to write; inside models/zoo it is registered"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs (default: the zoo definition's)"),
    subjects: int = typer.Option(None, "--subjects", help="use only the first N subjects of the cohort"),
    validation_subjects: int = typer.Option(None, "--validation-subjects", help="held-out subjects to score"),
    seed: int = typer.Option(0, "--seed", help="initialisation and shuffling seed"),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="cache generated phantoms here (.npz)"),
) -> None:
    """Pretrain a default model on SYNTHETIC phantoms, report Dice on held-out PD and T1 phantoms."""
    from models.zoo import definition
    from models.zoo.build import train_default, write_package

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        definition(region)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    last = [-1]

    def progress(fraction: float) -> None:
        step = int(fraction * 20)
        if step != last[0]:
            last[0] = step
            typer.echo(f"training {fraction * 100:5.1f} %", err=True)

    try:
        pkg, report = train_default(
            region,
            cohort_name,
            subjects=subjects,
            epochs=epochs,
            seed=seed,
            validation_subjects=validation_subjects,
            cache_dir=cache_dir,
            progress=progress,
        )
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    entry = write_package(pkg, out)
    typer.echo(json.dumps({"package": entry, "report": report}, indent=2))
