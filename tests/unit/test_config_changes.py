"""Configuration changes: validation names the field and the reason, saving is atomic and keeps the other
sections and a backup, the diff says what changed without secrets, and the audit names the actor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from dicom_node.core.config import NodeConfig
from dicom_node.core.config_changes import (
    MASK,
    ConfigChangeError,
    apply_config_change,
    backup_path,
    diff_configs,
    load_config_file,
    merge_reloadable,
    reloadable_sections,
    reloadable_view,
)
from dicom_node.core.db import session_scope
from dicom_node.core.review_tables import AuditEvent

PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}
CT = {"name": "ct", "ae_title": "CT_SCANNER", "host": "127.0.0.1", "port": 105}


def _write(tmp_path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "node": {"ae_title": "LAUREL", "port": 11112, "storage_dir": str(tmp_path / "store")},
        "peers": [PACS],
        "routing": [{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],
        "jobs": {"workers": 1, "max_attempts": 3},
        **sections,
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refusal(path: Path, changes: dict[str, Any]) -> ConfigChangeError:
    before = path.read_bytes()
    with pytest.raises(ConfigChangeError) as caught:
        apply_config_change(path, changes, "Dr Admin", engine=None)
    assert path.read_bytes() == before, "a refused change must leave the file as it was"
    assert not backup_path(path).exists()
    return caught.value


def test_reloadable_sections_are_those_the_config_has() -> None:
    sections = reloadable_sections()
    assert {"peers", "routing", "retention"} <= set(sections)
    assert all(name in NodeConfig.model_fields for name in sections)
    assert "node" not in sections and "jobs" not in sections


def test_invalid_routing_regex_is_refused_with_field_and_reason(tmp_path: Path) -> None:
    path = _write(tmp_path)
    error = _refusal(path, {"routing": [{"model": "leg", "match": {"SeriesDescription": "(leg"}}]})
    assert error.field == "routing.0.match"
    assert "regex" in error.reason and "SeriesDescription" in error.reason


def test_peer_without_port_is_refused_with_field_and_reason(tmp_path: Path) -> None:
    path = _write(tmp_path)
    error = _refusal(path, {"peers": [PACS, {k: v for k, v in CT.items() if k != "port"}]})
    assert (error.field, error.reason) == ("peers.1.port", "Field required")


def test_sections_that_need_a_restart_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert _refusal(path, {"jobs": {"workers": 4}}).field == "jobs"
    assert _refusal(path, {"node": {"storage_dir": "/elsewhere"}}).field == "node.storage_dir"


def test_save_replaces_only_the_given_sections_and_keeps_a_backup(tmp_path: Path) -> None:
    path = _write(tmp_path)
    before = path.read_text()
    result = apply_config_change(
        path, {"peers": [PACS, CT], "retention": {"finished_study_days": 3}}, "Dr Admin", engine=None
    )
    assert result.saved
    assert result.diff.sections["peers"] == {"added": ["ct"]}
    assert result.diff.sections["retention"] == {"changed": {"finished_study_days": {"from": 30.0, "to": 3.0}}}
    saved = yaml.safe_load(path.read_text())
    assert saved["jobs"] == {"workers": 1, "max_attempts": 3}
    assert saved["routing"] == [{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}]
    assert [p["name"] for p in saved["peers"]] == ["pacs", "ct"]
    assert backup_path(path).read_text() == before
    assert load_config_file(path).peer("CT_SCANNER").port == 105
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_dry_run_and_no_change_write_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path)
    before = path.read_bytes()
    assert not apply_config_change(path, {"peers": [PACS, CT]}, "Dr Admin", engine=None, dry_run=True).saved
    assert not apply_config_change(path, {"peers": [PACS]}, "Dr Admin", engine=None).saved
    assert path.read_bytes() == before


def test_listener_change_is_reported_and_merged_only_when_asked(tmp_path: Path) -> None:
    old = load_config_file(_write(tmp_path))
    new = old.model_copy(update={"node": old.node.model_copy(update={"port": 11200, "max_pdu": 0})})
    diff = diff_configs(old, new)
    assert diff.listener == {"node.port": {"from": 11112, "to": 11200}}
    assert diff.needs_restart == ["node.max_pdu"]
    assert merge_reloadable(old, new).node.port == 11112
    merged = merge_reloadable(old, new, listener=True)
    assert merged.node.port == 11200 and merged.node.max_pdu == old.node.max_pdu


def test_audit_event_names_the_actor_and_the_change(tmp_path: Path) -> None:
    path = _write(tmp_path)
    engine = load_config_file(path).node.engine()
    calls: list[str] = []
    result = apply_config_change(path, {"peers": []}, "Dr Admin", engine=engine, reload=calls.append)
    assert calls == ["Dr Admin"] and result.saved
    with session_scope(engine) as session:
        event = session.scalars(select(AuditEvent)).one()
    assert (event.operator, event.action) == ("Dr Admin", "config_change")
    assert event.detail["sections"] == {"peers": {"removed": ["pacs"]}}
    engine.dispose()


def test_secrets_are_masked_and_a_masked_secret_keeps_its_value(tmp_path: Path) -> None:
    from dicom_node.core import config_changes

    config = load_config_file(_write(tmp_path))
    view = reloadable_view(config)
    assert view["peers"][0]["ae_title"] == "PACS"
    # A secret inside a section (as a notifications section may carry) is masked and kept when sent back masked.
    masked = config_changes._masked({"hooks": [{"name": "a", "url": "https://x", "secret_token": "s3cr3t"}]})
    assert masked["hooks"][0]["secret_token"] == MASK
    kept = config_changes._unmask(masked["hooks"], [{"name": "a", "url": "https://x", "secret_token": "s3cr3t"}])
    assert kept[0]["secret_token"] == "s3cr3t"
    summary = config_changes._summarise_section({"secret_token": "a", "days": 1}, {"secret_token": "b", "days": 2})
    assert summary == {"changed": {"days": {"from": 1, "to": 2}, "secret_token": "changed"}}


def test_a_reload_that_fails_is_reported_after_the_save(tmp_path: Path) -> None:
    path = _write(tmp_path)

    def no_node(_actor: str) -> None:
        raise RuntimeError("no Laurel node is running")

    result = apply_config_change(path, {"peers": []}, "Dr Admin", engine=None, reload=no_node)
    assert result.saved and load_config_file(path).peers == []
    assert result.as_dict()["reload"] == {"outcome": "not_confirmed", "error": "no Laurel node is running"}


def test_a_save_keeps_the_comments_of_everything_it_did_not_change(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "config" / "node.yaml"
    path = tmp_path / "node.yaml"
    original = shipped.read_text().replace("storage_dir: var/node", f"storage_dir: {tmp_path / 'store'}")
    path.write_text(original)
    routing = [{"model": "leg", "called_ae": "LAUREL_LEG"}]
    result = apply_config_change(path, {"routing": routing, "node": {"port": 11113}}, "Dr Admin", engine=None)
    assert result.saved
    text = path.read_text()
    # the routing section was rewritten; the comments of every other section stayed, line for line
    kept = [line for line in original.splitlines() if "#" in line and not line.startswith("  - model")]
    kept = [line for line in kept if "called_ae: LAUREL_LEG" not in line and "port: 11112" not in line]
    missing = [line for line in kept if line not in text.splitlines()]
    assert missing == [], missing
    assert "  port: 11113" in text.splitlines()  # the listener field changed in place
    assert "  ae_title: LAUREL          # our AE title" in text  # its neighbour and comment untouched
    assert load_config_file(path).routing[0].model == "leg" and len(load_config_file(path).routing) == 1
    assert yaml.safe_load(text) == {
        **yaml.safe_load(original),
        "routing": routing,
        "node": {**yaml.safe_load(original)["node"], "port": 11113},
    }
    assert backup_path(path).read_text() == original
