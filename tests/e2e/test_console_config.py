"""Configuration from the console, applied without a restart (``dicom_node.core.config_changes`` underneath):
a peer added in the form can send at once and a removed one is refused; an invalid routing regex is refused
with its rule, field and reason, and the node keeps its rules and its file."""

from __future__ import annotations

from collections.abc import Callable
from html import unescape
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_console import ROUTING, csrf_of, login
from tests.peers import c_echo, storescu, write_study
from tests.workflow_fixtures import OPERATOR, RunningNode

MODALITY = {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}


@pytest.fixture
def filed_node(filed_node_factory: Callable[..., RunningNode]) -> RunningNode:
    """A node started from a file whose studies stay open (settle_seconds 3600): no model runs here."""
    return filed_node_factory(peers=[MODALITY], routing=ROUTING, node={"settle_seconds": 3600})


def _instances(running: RunningNode) -> int:
    from dicom_node.core.db import Instance, session_scope

    with session_scope(running.node.engine) as s:
        return s.query(Instance).count()


@pytest.mark.peers
def test_a_peer_added_in_the_console_sends_at_once_and_a_removed_one_is_refused(
    filed_node: RunningNode, tmp_path: Path
) -> None:
    running = filed_node
    port = running.node.port
    study = write_study(tmp_path / "study", series=1, instances=2)
    assert c_echo(port, calling_ae="NEWCOMER").is_rejected  # not a peer yet

    browser = login(running, running.token)
    csrf = csrf_of(browser.get(running.url + "/console/config", timeout=30).text)
    form = {"csrf": csrf, "name": "newcomer", "ae_title": "NEWCOMER", "host": "127.0.0.1", "port": "104"}
    r = browser.post(running.url + "/console/config/peers/add", data={**form, "send_to_us": "on"}, timeout=60)
    assert r.status_code == 200 and "peers: saved and applied by the running node" in r.text, r.text[-3000:]
    assert "NEWCOMER" in yaml.safe_load((running.workdir / "node.yaml").read_text())["peers"][1]["ae_title"]

    proc = storescu(port, study.paths, calling_ae="NEWCOMER")  # no restart in between
    assert proc.returncode == 0, proc.stderr
    assert _instances(running) == len(study.paths)

    r = browser.post(running.url + "/console/config/peers/newcomer/remove", data={"csrf": csrf}, timeout=60)
    assert r.status_code == 200 and "peers: saved and applied" in r.text
    assert c_echo(port, calling_ae="NEWCOMER").is_rejected
    assert c_echo(port, calling_ae="STORESCU").echo_status == 0  # the others still may

    # A bad peer is refused with the field and the reason; nothing is saved.
    before = (running.workdir / "node.yaml").read_text()
    r = browser.post(
        running.url + "/console/config/peers/add",
        data={**form, "name": "bad", "ae_title": "A" * 17, "port": "70000"},
        timeout=60,
    )
    text = unescape(r.text)
    assert r.status_code == 422 and "DICOM allows at most 16" in text, text[-3000:]
    assert "peers.1.ae_title" in text and "peers.1.port" in text
    assert (running.workdir / "node.yaml").read_text() == before

    audit = unescape(browser.get(running.url + "/console/audit", timeout=30).text)
    assert audit.count("config_change") == 2 and OPERATOR in audit


def test_an_invalid_routing_regex_is_refused_with_its_field_and_the_old_rules_stay(
    filed_node: RunningNode, tmp_path: Path
) -> None:
    running = filed_node
    browser = login(running, running.token)
    page = browser.get(running.url + "/console/config", timeout=30)
    csrf = csrf_of(page.text)
    before = (running.workdir / "node.yaml").read_text()
    rules_before = list(running.node.services.config.routing)

    bad = {
        "csrf": csrf,
        "action": "save",
        "rule-0-order": "1",
        "rule-0-model": "leg",
        "rule-0-match": "SeriesDescription: (?i)leg(",
        "rule-1-order": "2",
        "rule-1-model": "thigh",
        "rule-1-match": "SeriesDescription: (?i)thigh",
    }
    r = browser.post(running.url + "/console/config/routing", data=bad, timeout=60)
    text = unescape(r.text)
    assert r.status_code == 422
    assert "routing.0.match: routing regex for SeriesDescription is invalid" in text, text[-3000:]
    assert "(?i)leg(" in text  # what was typed stays in the form
    assert (running.workdir / "node.yaml").read_text() == before
    assert list(running.node.services.config.routing) == rules_before

    # A valid edit: thigh first, a new rule last; Check says what would change, Save applies it.
    good = {
        **bad,
        "rule-0-match": "SeriesDescription: (?i)leg",
        "rule-0-order": "5",
        "rule-2-order": "9",
        "rule-2-model": "leg",
        "rule-2-called_ae": "LEGS",
        "rule-2-match": "",
    }
    r = browser.post(running.url + "/console/config/routing", data={**good, "action": "check"}, timeout=60)
    assert r.status_code == 200 and "the rules are valid (not saved); saving would change routing" in r.text
    assert (running.workdir / "node.yaml").read_text() == before
    r = browser.post(running.url + "/console/config/routing", data=good, timeout=60)
    assert r.status_code == 200 and "routing: saved and applied" in r.text
    routing = running.node.services.config.routing
    assert [(rule.model, rule.called_ae) for rule in routing] == [("thigh", None), ("leg", None), ("leg", "LEGS")]
    shown = browser.get(running.url + "/console/routing", timeout=30).text
    assert shown.index("(?i)thigh") < shown.index("(?i)leg") and "LEGS" in shown

    # Without the CSRF token nothing changes.
    no_csrf = {k: v for k, v in bad.items() if k != "csrf"}
    r = browser.post(running.url + "/console/config/routing", data=no_csrf, timeout=30)
    assert r.status_code == 403


def test_laurel_console_link_logs_an_admin_in_once(filed_node: RunningNode) -> None:
    import subprocess
    import sys

    import requests

    def link(*args: str) -> subprocess.CompletedProcess[str]:
        config = str(filed_node.workdir / "node.yaml")
        cmd = [sys.executable, "-m", "dicom_node", "console-link", *args, "--config", config]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    nobody = link("Dr Nobody")
    assert nobody.returncode == 2 and "has no admin token" in nobody.stderr, nobody.stderr
    made = link(OPERATOR, "--page", "/console/models")
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(f"{filed_node.url}/console/login/once?code=")
    browser = requests.Session()
    r = browser.get(url, timeout=60)
    assert r.status_code == 200 and r.url == f"{filed_node.url}/console/models" and 'id="model-leg"' in r.text
    assert requests.get(url, timeout=30, allow_redirects=False).status_code == 401  # once only
