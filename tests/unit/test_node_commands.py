"""The node's commands: status (text and JSON), dead letters, requeue, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicom_node.cli import node_commands
from dicom_node.core.config import NodeConfig
from dicom_node.core.db import JobState, session_scope
from dicom_node.core.engine import make_engine
from dicom_node.core.jobs import enqueue
from dicom_node.intake.routing import Router
from dicom_node.intake.store import Store
from tests.peers import make_image
from tests.unit.test_store import incoming


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    node_commands.register(app)
    return app


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"node": {"storage_dir": str(tmp_path / "node")}, "api": {"enabled": False}}))
    return path


def test_status_of_a_node_that_received_nothing(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--config", str(write_config(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "node": "LAUREL",
        "studies": [],
        "jobs": {},
        "dead_letters": [],
        "unrouted": [],
    }
    assert not (tmp_path / "node").exists()  # a status query creates nothing


def test_status_lists_studies_jobs_dead_letters_and_unrouted_series(cli: typer.Typer, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cfg = NodeConfig.load(config)
    engine = make_engine(cfg.node.db_url)
    store = Store(cfg.node.storage_dir, engine, Router([]))
    store.open()
    study_uid, series_uid = generate_uid(), generate_uid()
    for i in range(3):
        store.receive(incoming(make_image(study_uid, series_uid, instance_number=i + 1)))
    store.close()
    with session_scope(engine) as session:
        enqueue(session, "segment", {"study_id": 1})
        dead = enqueue(session, "export", {"peer": "pacs", "paths": []})
        dead.state, dead.attempts, dead.last_error = JobState.DEAD, 8, "peer pacs: not reachable"
        dead_id = dead.id
    engine.dispose()
    runner = CliRunner()
    text = runner.invoke(cli, ["status", "--config", str(config)])
    assert text.exit_code == 0, text.output
    assert "study     1  RECEIVING         1 series      3 instances" in text.output
    assert f"job {dead_id:>5}  export       after 8 attempts: peer pacs: not reachable" in text.output
    assert "unrouted series" in text.output
    report = json.loads(runner.invoke(cli, ["status", "--config", str(config), "--json"]).output)
    assert report["studies"][0]["instances"] == 3 and report["jobs"] == {
        "segment": {"QUEUED": 1},
        "export": {"DEAD": 1},
    }
    letters = runner.invoke(cli, ["dead-letters", "--config", str(config)])
    assert f"job {dead_id:>5}" in letters.output
    requeued = runner.invoke(cli, ["requeue", str(dead_id), "--config", str(config)])
    assert requeued.exit_code == 0 and "queued again" in requeued.output
    assert runner.invoke(cli, ["dead-letters", "--config", str(config)]).output.strip() == "no dead letters"
    missing = runner.invoke(cli, ["requeue", "999", "--config", str(config)])
    assert missing.exit_code == 1 and "there is no job 999" in missing.output


def test_bad_config_exits_2_naming_the_field(cli: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: {max_associations: 0}\n")
    for command in (["status"], ["echo", "pacs"], ["requeue", "1"], ["dead-letters"]):
        result = CliRunner().invoke(cli, [*command, "--config", str(bad)])
        assert result.exit_code == 2 and "node.max_associations" in result.output
