"""``laurel model create`` end to end: a new model from SYNTHETIC phantom subjects written as DICOM + SEG,
evaluated on held-out subjects, installed on a real node, routed to, and drafting a study.

Training is shrunk (small patch, narrow network, few epochs) to run in a couple of minutes on 2 cores; the
CLI defaults are for real data.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from models.metrics import dice
from tests.helpers_create import write_labelled_phantom
from tests.peers import dciodvfy
from tests.workflow_fixtures import RunningNode, send_files

pytestmark = pytest.mark.timeout(900)

FAST = ["--epochs", "25", "--learning-rate", "5e-3", "--patch", "64", "--spacing", "2.5"]
FAST += ["--base-filters", "8", "--levels", "3"]
MIN_DICE = 0.4  # per label; chance is ~0.02 (13 classes, a muscle is 1-4 % of the voxels), untrained ~0


def _cli(args: list[str]) -> str:
    """``laurel model ...`` (the group the console script attaches)."""
    from models.cli import model_app

    result = CliRunner().invoke(model_app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_create_evaluate_install_and_draft(tmp_path: Path, workflow_node_factory: Callable[..., RunningNode]) -> None:
    train_dir, test_dir = tmp_path / "site", tmp_path / "heldout"
    for i in range(10):
        _files, seg, _ph = write_labelled_phantom(train_dir / f"subject{i:02d}", 8100 + i)
        assert dciodvfy(seg) == [], seg
    for i in range(2):
        write_labelled_phantom(test_dir / f"subject{i}", 8200 + i)
    key, out = tmp_path / "keys" / "site.pem", tmp_path / "calf-site.laurel"

    args = ["create", str(train_dir), "--name", "calf-site", "--out", str(out), "--signing-key", str(key)]
    created = _cli([*args, "--holdout", "2", *FAST])
    assert "= the leg catalogue" in created and "signed by key" in created
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["cases"] == 2 and len(report["training"]["training_subjects"]) == 8
    assert set(report["training"]["held_out_subjects"]).isdisjoint(report["training"]["training_subjects"])
    for row in report["labels"]:
        assert row["cases"] == 2 and row["dice"]["mean"] >= MIN_DICE, row
        assert row["hd95_mm"]["median"] is not None and row["hd95_mm"]["median"] < 40.0, row

    # The same report for the package on other labelled data (subjects never seen by `create`).
    evaluated = _cli(
        ["evaluate", str(out), str(test_dir), "--public-key", f"{key}.pub", "--report", str(tmp_path / "e.json")]
    )
    assert "soleus_left" in evaluated
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["cases"] == 2 and len(ev["labels"]) == 12
    assert min(row["dice"]["mean"] for row in ev["labels"]) >= MIN_DICE, ev["labels"]

    # A node routes leg series to the new model by its name and drafts with it.
    running = workflow_node_factory(routing=[{"model": "calf-site", "match": {"SeriesDescription": "(?i)leg"}}])
    from dicom_node.cli.model_install import install_into_node
    from models.create.build import read_public_keys

    state = install_into_node(running.node.config, out, read_public_keys([Path(f"{key}.pub")]))
    assert state["name"] == "calf-site" and state["active_revision"] == state["installed_revision"]

    files, seg, ph = write_labelled_phantom(tmp_path / "incoming", 8300)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    send_files(running.node.port, files)
    study = running.wait_state(str(source.StudyInstanceUID), {"PENDING_REVIEW", "FAILED"})
    assert study["state"] == "PENDING_REVIEW", study["failure_reason"]
    detail = running.get(f"/api/v1/studies/{study['id']}").json()
    series = next(se for se in detail["series"] if se["has_draft"])
    assert series["model"] == "calf-site"
    draft = np.load(io.BytesIO(running.get(f"/api/v1/series/{series['id']}/labels?version=draft").content))
    assert draft.shape == ph.labels.shape
    assert dice(draft, ph.labels, {v: str(v) for v in range(1, 13)})["mean"] >= MIN_DICE
