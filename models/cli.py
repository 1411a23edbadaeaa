"""``laurel model ...`` and ``laurel phantom``: command-line access to the model zoo and the phantom."""

from __future__ import annotations

import json
import logging
import sys
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


def _die(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


class _Bar:
    """One progress bar on stderr over the stages of a command (reading, training, evaluating)."""

    def __init__(self, stages: dict[str, tuple[float, float]] | None = None) -> None:
        self.stages = stages or {"reading": (0.0, 0.1), "training": (0.1, 0.9), "evaluating": (0.9, 1.0)}
        self.bar = typer.progressbar(length=1000, label="reading", file=sys.stderr, show_eta=True)
        self.done = 0

    def __enter__(self) -> _Bar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, stage: str, fraction: float) -> None:
        lo, hi = self.stages.get(stage, (0.0, 1.0))
        target = int(1000 * (lo + (hi - lo) * fraction))
        self.bar.label = f"{stage:10}"
        if target > self.done:
            self.bar.update(target - self.done)
            self.done = target


def _write_report(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"report written to {path}", err=True)


@model_app.command("create")
def create_command(
    data: Path = typer.Argument(..., help="folder of DICOM series with a DICOM-SEG each, or images/ + labels/ NIfTI"),
    name: str = typer.Option(..., "--name", help="the model's name (what the node's routing rules refer to)"),
    out: Path = typer.Option(..., "--out", help="package file to write (signed)"),
    signing_key: Path = typer.Option(
        Path("model_signing_key.pem"),
        "--signing-key",
        help="Ed25519 PEM key that signs it; created with .pub if absent",
    ),
    labels: Path = typer.Option(None, "--labels", help="label table (CSV/JSON: value,name,snomed_code,colour,side)"),
    region: str = typer.Option(None, "--region", help="body region of a label set outside the catalogue"),
    limbs: str = typer.Option("auto", "--limbs", help="auto | split (left limb mirrored onto the right) | none"),
    spacing: float = typer.Option(None, "--spacing", help="in-plane mm the network sees (default: from the data)"),
    patch: int = typer.Option(None, "--patch", help="patch size in pixels (default 128 per limb, 256 unsplit)"),
    epochs: int = typer.Option(40, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    learning_rate: float = typer.Option(2e-3, "--learning-rate"),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    base_filters: int = typer.Option(16, "--base-filters", help="network width"),
    levels: int = typer.Option(4, "--levels", help="network depth (resolution levels)"),
    holdout: float = typer.Option(0.2, "--holdout", help="held-out subjects: a fraction (<1) or a number"),
    seed: int = typer.Option(0, "--seed", help="split, initialisation and shuffling seed"),
    report_path: Path = typer.Option(None, "--report", help="report JSON (default: OUT.report.json)"),
) -> None:
    """Build a new model from a site's own labelled studies; report Dice, HD95 and volume per label."""
    from models.create.build import CreateSettings, create_model, write_signed
    from models.create.build import signing_key as load_key
    from models.create.dataset import load_dataset
    from models.create.report import format_report

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        settings = CreateSettings(
            name=name,
            region=region,
            limbs=limbs,
            spacing=spacing,
            patch=patch,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            augment=augment,
            base_filters=base_filters,
            levels=levels,
            holdout=holdout,
            seed=seed,
        )
        key = load_key(signing_key)
        dataset = load_dataset(data, labels)
        typer.echo(
            f"{len(dataset.cases)} labelled case(s) of {len(dataset.subjects())} subject(s) ({dataset.kind}), "
            f"{len(dataset.table.labels)} labels"
            + (f" = the {dataset.table.region} catalogue" if dataset.table.region else ""),
            err=True,
        )
        with _Bar() as bar:
            pkg, report = create_model(settings, dataset, progress=bar)
        entry = write_signed(pkg, out, key)
    except (ValueError, OSError) as exc:
        raise _die(exc) from exc
    typer.echo(format_report(report, f"model {pkg.name} v{pkg.version} ({pkg.region}) on held-out subjects"))
    typer.echo(f"package {entry['file']} ({entry['size'] / 1e6:.2f} MB), signed by key {entry['signed_by']}")
    _write_report(report, report_path or out.with_name(out.name + ".report.json"))


@model_app.command("evaluate")
def evaluate_command(
    package: str = typer.Argument(..., help="a package file, or a default model name (leg, thigh)"),
    data: Path = typer.Argument(..., help="labelled data, as for `laurel model create`"),
    labels: Path = typer.Option(None, "--labels", help="label table of the data (NIfTI; optional for SEGs)"),
    public_keys: list[Path] = typer.Option([], "--public-key", help="PEM key that signed the package (repeatable)"),
    report_path: Path = typer.Option(None, "--report", help="write the report as JSON here"),
) -> None:
    """The per-label report (Dice, HD95 mm, volume difference) of any package on any labelled data."""
    from models.create.build import evaluate, load_package, read_public_keys
    from models.create.dataset import load_dataset
    from models.create.report import format_report

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        pkg = load_package(package, read_public_keys(public_keys))
        dataset = load_dataset(data, labels)
        with _Bar({"evaluating": (0.0, 1.0)}) as bar:
            report = evaluate(pkg, dataset.cases, dataset, progress=lambda f: bar("evaluating", f))
    except (ValueError, OSError) as exc:
        raise _die(exc) from exc
    report["model"] = {"name": pkg.name, "region": pkg.region, "version": pkg.version, "family_id": pkg.family_id}
    typer.echo(format_report(report, f"model {pkg.name} v{pkg.version} ({pkg.region}) on {data}"))
    _write_report(report, report_path)
