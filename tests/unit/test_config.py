"""The node configuration refuses bad input with messages that say what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.core.config import ConfigError, NodeConfig, validate_ae_title

REPO = Path(__file__).resolve().parents[2]


def test_node_defaults_for_pacs_fan_out_and_peer_bounds() -> None:
    node = NodeConfig.load(None).node
    assert node.max_associations == 32
    assert node.network_timeout == 30.0
    assert node.max_inflated_size == 1 << 30


def test_example_config_loads() -> None:
    cfg = NodeConfig.load(REPO / "config" / "node.yaml")
    assert cfg.node.ae_title == "LAUREL"
    assert cfg.peer("pacs").receive_results
    assert cfg.routing[0].called_ae == "LAUREL_LEG"


@pytest.mark.parametrize(
    ("title", "message"),
    [("A" * 17, "at most 16"), ("   ", "empty"), ("BAD\\AE", "backslash"), ("TAB\tAE", "control")],
)
def test_bad_ae_titles(title: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_ae_title(title)


def test_ae_title_strips_spaces() -> None:
    assert validate_ae_title(" LAUREL ") == "LAUREL"


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text(
        "node: {ae_title: WAY_TOO_LONG_AE_TITLE, port: 70000}\n"
        "peers:\n"
        "  - {name: a, ae_title: X, host: 127.0.0.1, port: 104}\n"
        "  - {name: a, ae_title: Y, host: 127.0.0.1, port: 105}\n"
    )
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(bad)
    text = str(info.value)
    assert "node.ae_title" in text and "node.port" in text


def test_duplicate_peers_refused(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text(
        "peers:\n"
        "  - {name: a, ae_title: X, host: 127.0.0.1, port: 104}\n"
        "  - {name: a, ae_title: Y, host: 127.0.0.1, port: 105}\n"
    )
    with pytest.raises(ConfigError, match="share the name"):
        NodeConfig.load(bad)


def test_routing_rule_needs_a_dicom_keyword(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text("routing:\n  - {model: leg, match: {NotAKeyword: x}}\n")
    with pytest.raises(ConfigError, match="not a DICOM keyword"):
        NodeConfig.load(bad)


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUREL_NODE__PORT", "11999")
    cfg = NodeConfig.load(REPO / "config" / "node.yaml")
    assert cfg.node.port == 11999


def test_cli_exits_nonzero_on_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text("node: {port: 0}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dicom_node", "status", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "node.port" in proc.stderr
