"""The shipped default models: trusted by the manifest, small, accurate on PD phantoms; the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models import package, signing
from models.cli import model_app
from models.metrics import dice
from models.phantom import cohort, generate
from models.zoo import DEFINITIONS, MANIFEST, ZOO_DIR, definition, load_default, manifest


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_shipped_package_matches_the_manifest(name: str) -> None:
    entry = manifest()["packages"][name]
    data = (ZOO_DIR / entry["file"]).read_bytes()
    assert len(data) == entry["size"] <= 10 * 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == entry["file_sha256"]
    assert signing.parse(data).header["payload_sha256"] == entry["payload_sha256"]
    info = package.read_manifest(data)
    assert info["zoo"] is True and info["name"] == name and info["family_id"] == definition(name).family_id


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_load_default_segments_a_held_out_pd_phantom(name: str) -> None:
    pkg = load_default(name)
    assert pkg.region == definition(name).region
    assert pkg.metadata["evaluation"]["dice_pd"]["median"] > 0.8
    ph = generate(cohort(definition(name).validation_cohort, 1)[0])
    scores = dice(pkg.apply(ph.image, ph.spacing), ph.labels, pkg.label_names())
    assert scores["overall"] > 0.75, scores


def test_unknown_default_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown default model"):
        load_default("arm")


def test_cli_list_and_show() -> None:
    runner = CliRunner()
    listed = runner.invoke(model_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.output)}
    assert set(rows) == set(DEFINITIONS) and all(r["shipped"] for r in rows.values())
    table = runner.invoke(model_app, ["list"])
    assert table.exit_code == 0 and "leg" in table.output and "thigh" in table.output
    shown = runner.invoke(model_app, ["show", "leg"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["name"] == "leg" and info["zoo"] is True and info["payload_sha256"]
    missing = runner.invoke(model_app, ["show", "/nonexistent/model.laurel"])
    assert missing.exit_code == 2


@pytest.mark.slow
def test_cli_train_writes_a_package_outside_the_zoo_without_registering_it(tmp_path: Path) -> None:
    before = MANIFEST.read_bytes()
    out = tmp_path / "leg-small.laurel"
    args = ["train", "--region", "leg", "--cohort", "pretrain_pd_leg", "--out", str(out)]
    result = CliRunner().invoke(model_app, [*args, "--subjects", "1", "--epochs", "1", "--validation-subjects", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["package"]["size"] == out.stat().st_size
    assert set(report["report"]) >= {"dice_pd", "dice_t1", "train_seconds"}
    info = package.read_manifest(out.read_bytes())
    assert info["version"] == 1 and info["zoo"] is False  # not trusted: it is not the shipped file
    assert MANIFEST.read_bytes() == before
    bad = CliRunner().invoke(model_app, ["train", "--region", "arm", "--out", str(out)])
    assert bad.exit_code == 2
