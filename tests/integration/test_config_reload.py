"""Configuration without downtime, on a real ``laurel serve`` (supervisor, intake, API, worker processes):

* a peer added through the admin API sends at once (DCMTK storescu → stored) and a removed one is refused,
  while an association of the removed peer that was open before the change finishes and is stored whole;
  the supervisor, intake, API and worker keep their PIDs;
* an invalid routing regex is refused (422 naming ``routing.0.match``; ``laurel reload`` exits 2 naming it)
  and the node keeps routing with the old rules;
* SIGHUP and ``laurel reload`` apply a hand-edited file, audited with who asked;
* a new DICOM port restarts the intake only: the API and worker keep their PIDs, an association open on the
  old listener finishes, the new port accepts and the old one is closed.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import func, select

from dicom_node.core.db import Instance, Series, session_scope
from tests.integration.test_processes import _all_children
from tests.peers import (
    PEER_ENV,
    REPO,
    c_echo,
    free_port,
    port_open,
    storescu,
    wait_until,
    write_study,
)
from tests.restart.harness import NodeServer

MODALITY = {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}
ECHO = {"name": "echo", "ae_title": "ECHOSCU", "host": "127.0.0.1", "port": 105}
NEWCOMER = {"name": "newcomer", "ae_title": "NEWCOMER", "host": "127.0.0.1", "port": 106}
#: A model name no package has: routing is checked on the series row; settle_seconds keeps studies open, so
#: no segment job ever runs.
OLD_RULE = {"model": "old_rule_model", "match": {"SeriesDescription": "^ROUTED"}}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """One ``laurel serve`` for the module (intake, API, one worker), with an admin token."""
    workdir = tmp_path_factory.mktemp("reload")
    settings: dict[str, Any] = {
        "node": {
            "ae_title": "LAUREL",
            "host": "127.0.0.1",
            "port": free_port(),
            "storage_dir": str(workdir / "node"),
            "settle_seconds": 3600,
            "max_associations": 4,
            "network_timeout": 60,
        },
        "peers": [MODALITY, ECHO],
        "routing": [OLD_RULE],
        "api": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        "jobs": {"workers": 1, "poll_seconds": 0.1, "stop_grace_seconds": 60},
        "learning": {"guard": False},
    }
    server = NodeServer(workdir, settings).start(timeout=180)
    try:
        yield server
    finally:
        server.stop(timeout=90)


def _pids(node: NodeServer) -> dict[str, int]:
    children = wait_until(lambda: _all_children(node.pid, 3), 60, 0.2, "intake, api and worker0")
    return {"supervisor": node.pid, **children}


def _file_config(node: NodeServer) -> dict[str, Any]:
    return dict(yaml.safe_load(node.config_path.read_text()))


def _stored(node: NodeServer, sop_instance_uids: Sequence[str]) -> int:
    engine = node.engine()
    try:
        with session_scope(engine) as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Instance).where(Instance.SOPInstanceUID.in_(sop_instance_uids))
                )
                or 0
            )
    finally:
        engine.dispose()


def _audit(node: NodeServer) -> list[dict[str, Any]]:
    events = node.api("GET", "/api/v1/audit").json()["events"]
    return [e for e in events if e["action"].startswith("config_")]


def _laurel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**PEER_ENV, "PYTHONPATH": str(REPO)},
        check=False,
    )


class HeldAssociation:
    """A pynetdicom association kept open between sends (a peer in the middle of a study)."""

    def __init__(self, port: int, calling_ae: str, paths: Sequence[Path]) -> None:
        from pydicom.filereader import read_file_meta_info
        from pynetdicom import AE

        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for sop_class in sorted({str(read_file_meta_info(p).MediaStorageSOPClassUID) for p in paths}):
            ae.add_requested_context(sop_class)
        self.assoc = ae.associate("127.0.0.1", port, ae_title="LAUREL")
        assert self.assoc.is_established, "the held association was not accepted"

    def send(self, paths: Sequence[Path]) -> list[int]:
        """C-STORE each file; their statuses."""
        statuses = []
        for path in paths:
            assert self.assoc.is_established, "the held association was aborted"
            status = self.assoc.send_c_store(path)
            statuses.append(int(status.Status) if "Status" in status else -1)
        return statuses

    def release(self) -> None:
        """A-RELEASE (asserting the association was still established)."""
        assert self.assoc.is_established, "the held association was aborted"
        self.assoc.release()


def test_a_peer_added_via_the_api_sends_at_once_and_a_removed_one_is_refused(node: NodeServer, tmp_path: Path) -> None:
    before = _pids(node)
    study = write_study(tmp_path / "held", series=1, instances=10)
    held = HeldAssociation(node.port, "STORESCU", study.paths)
    assert held.send(study.paths[:5]) == [0] * 5

    response = node.api("PUT", "/api/v1/config", json={"peers": [ECHO, NEWCOMER]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["saved"] and body["sections"]["peers"] == {"added": ["newcomer"], "removed": ["modality"]}
    assert sorted(body["reload"]["applied_by"]) == ["api", "intake", "worker0"]

    # The association opened before the change finishes under the policy it was accepted with.
    assert held.send(study.paths[5:]) == [0] * 5
    held.release()
    assert _stored(node, study.sop_instance_uids) == 10

    newcomer = write_study(tmp_path / "newcomer", series=1, instances=3)
    done = storescu(node.port, newcomer.paths, calling_ae="NEWCOMER")
    assert done.returncode == 0, done.stderr
    assert _stored(node, newcomer.sop_instance_uids) == 3

    refused = c_echo(node.port, "LAUREL", "STORESCU")
    assert refused.rejection == (1, 1, 3), "a removed peer's association must be rejected (calling AE title)"

    assert _pids(node) == before, "no process was restarted"
    shown = node.api("GET", "/api/v1/config").json()
    assert [p["name"] for p in shown["sections"]["peers"]] == ["echo", "newcomer"]
    assert [p["name"] for p in _file_config(node)["peers"]] == ["echo", "newcomer"]
    event = _audit(node)[0]
    assert (event["operator"], event["action"]) == ("Dr Restart", "config_change")
    assert event["detail"]["sections"]["peers"] == {"added": ["newcomer"], "removed": ["modality"]}

    # Put the module's peers back (the other tests send as STORESCU).
    restored = node.api("PUT", "/api/v1/config", json={"peers": [MODALITY, ECHO]})
    assert restored.status_code == 200, restored.text
    assert c_echo(node.port, "LAUREL", "STORESCU").echo_status == 0


def _routed_model(node: NodeServer, series_uid: str) -> str | None:
    engine = node.engine()
    try:
        with session_scope(engine) as session:
            return session.scalar(select(Series.model).where(Series.SeriesInstanceUID == series_uid))
    finally:
        engine.dispose()


def test_an_invalid_routing_regex_is_refused_and_the_old_rules_stay(node: NodeServer, tmp_path: Path) -> None:
    file_before = node.config_path.read_bytes()
    audited_before = len(_audit(node))
    bad = {"routing": [{"model": "new_rule_model", "match": {"SeriesDescription": "(ROUTED"}}]}
    for method, path in (("POST", "/api/v1/config/validate"), ("PUT", "/api/v1/config")):
        response = node.api(method, path, json=bad)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == "routing.0.match"
        assert "regex" in body["reason"] and "SeriesDescription" in body["reason"]
    assert node.config_path.read_bytes() == file_before
    assert len(_audit(node)) == audited_before

    # The same mistake made by hand in the file: laurel reload names it and exits non-zero; SIGHUP is refused.
    edited = _file_config(node)
    edited["routing"] = bad["routing"]
    node.config_path.write_text(yaml.safe_dump(edited))
    try:
        done = _laurel("reload", "--config", str(node.config_path))
        assert done.returncode == 2, done.stdout + done.stderr
        assert "routing.0.match" in done.stderr and "regex" in done.stderr
        os.kill(node.pid, signal.SIGHUP)
        wait_until(lambda: "config_refused" in [e["action"] for e in _audit(node)], 60, 0.2, "the refusal audited")
    finally:
        node.config_path.write_bytes(file_before)

    study = write_study(tmp_path / "routed", series=1, instances=2, descriptions=["ROUTED LEG"])
    done = storescu(node.port, study.paths)
    assert done.returncode == 0, done.stderr
    assert _routed_model(node, study.series_uids[0]) == "old_rule_model"
    assert node.api("GET", "/api/v1/config").json()["sections"]["routing"][0]["model"] == "old_rule_model"


def test_sighup_and_laurel_reload_apply_a_hand_edited_file(node: NodeServer, tmp_path: Path) -> None:
    before = _pids(node)
    original = node.config_path.read_bytes()
    try:
        edited = _file_config(node)
        edited["peers"] = [*edited["peers"], NEWCOMER]
        node.config_path.write_text(yaml.safe_dump(edited))
        os.kill(node.pid, signal.SIGHUP)
        wait_until(lambda: c_echo(node.port, "LAUREL", "NEWCOMER").echo_status == 0, 60, 0.2, "NEWCOMER accepted")
        event = _audit(node)[0]  # written before the intake was told
        assert event["action"] == "config_change"
        assert event["operator"].startswith(f"sighup from {getpass.getuser()}")
        assert event["detail"]["sections"]["peers"] == {"added": ["newcomer"]}

        edited["routing"] = [{"model": "new_rule_model", "match": {"SeriesDescription": "^ROUTED"}}]
        node.config_path.write_text(yaml.safe_dump(edited))
        done = _laurel("reload", "--config", str(node.config_path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "applied: routing" in done.stdout
        assert _audit(node)[0]["operator"] == f"laurel reload ({getpass.getuser()})"
        study = write_study(tmp_path / "routed", series=1, instances=2, descriptions=["ROUTED THIGH"])
        assert storescu(node.port, study.paths, calling_ae="NEWCOMER").returncode == 0
        assert _routed_model(node, study.series_uids[0]) == "new_rule_model"

        unchanged = _laurel("reload", "--config", str(node.config_path))
        assert unchanged.returncode == 0 and "nothing to apply" in unchanged.stdout
    finally:
        node.config_path.write_bytes(original)
        assert _laurel("reload", "--config", str(node.config_path)).returncode == 0
    assert _pids(node) == before, "no process was restarted"


def test_a_new_port_restarts_only_the_intake_and_an_open_association_finishes(node: NodeServer, tmp_path: Path) -> None:
    before = _pids(node)
    old_port, new_port = node.port, free_port()
    study = write_study(tmp_path / "held", series=1, instances=6)
    held = HeldAssociation(old_port, "STORESCU", study.paths)
    assert held.send(study.paths[:3]) == [0] * 3

    answers: list[requests.Response] = []
    saving = threading.Thread(
        target=lambda: answers.append(node.api("PUT", "/api/v1/config", json={"node": {"port": new_port}}))
    )
    saving.start()
    # The old intake stops listening at once; its open association goes on.
    wait_until(lambda: not port_open(old_port), 60, 0.1, "the old listener to close")
    assert held.send(study.paths[3:]) == [0] * 3
    held.release()
    saving.join(120)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    assert answers[0].json()["listener"] == {"node.port": {"from": old_port, "to": new_port}}
    node.settings["node"]["port"] = new_port

    assert _stored(node, study.sop_instance_uids) == 6
    assert c_echo(new_port, "LAUREL", "STORESCU").echo_status == 0
    assert not port_open(old_port)
    after = _pids(node)
    assert after["intake"] != before["intake"], "the intake was restarted"
    assert {k: v for k, v in after.items() if k != "intake"} == {k: v for k, v in before.items() if k != "intake"}
    assert requests.get(node.url + "/health", timeout=5).json()["port"] == new_port
    assert _file_config(node)["node"]["port"] == new_port


def test_the_embedded_node_reloads_in_place_and_open_associations_keep_their_routing(
    node_factory: Any, tmp_path: Path
) -> None:
    """The one-process node: an association accepted before a reload routes its new series by the rules it was
    accepted under; new associations get the new peers and rules; a new port is a new listener in place."""
    from dicom_node.core.config import NodeConfig

    embedded = node_factory(routing=[OLD_RULE])
    study = write_study(tmp_path / "held", series=2, instances=2, descriptions=["ROUTED A", "ROUTED B"])
    first, second = (study.by_series[uid] for uid in study.series_uids)
    held = HeldAssociation(embedded.port, "STORESCU", study.paths)
    assert held.send(first) == [0, 0]

    new_rule = {"model": "new_rule_model", "match": {"SeriesDescription": "^ROUTED"}}
    settings = embedded.config.model_dump(mode="json")
    diff = embedded.reload(NodeConfig(**{**settings, "routing": [new_rule], "peers": [ECHO, NEWCOMER]}))
    assert set(diff.sections) == {"peers", "routing"} and not diff.listener

    assert held.send(second) == [0, 0]  # a series first seen after the reload, on the old association
    held.release()
    late = write_study(tmp_path / "late", series=1, instances=1, descriptions=["ROUTED C"])
    assert storescu(embedded.port, late.paths, calling_ae="NEWCOMER").returncode == 0
    assert c_echo(embedded.port, "LAUREL", "STORESCU").rejection == (1, 1, 3)
    with embedded.session() as session:
        models = dict(session.execute(select(Series.SeriesInstanceUID, Series.model)).all())
    assert [models[uid] for uid in study.series_uids] == ["old_rule_model", "old_rule_model"]
    assert models[late.series_uids[0]] == "new_rule_model"

    old_port, new_port = embedded.port, free_port()
    listener = embedded.reload(
        NodeConfig(**{**embedded.config.model_dump(mode="json"), "node": {**settings["node"], "port": new_port}})
    )
    assert listener.listener == {"node.port": {"from": old_port, "to": new_port}}
    assert embedded.port == new_port and c_echo(new_port, "LAUREL", "NEWCOMER").echo_status == 0
    assert not port_open(old_port)
