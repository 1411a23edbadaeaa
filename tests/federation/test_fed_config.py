"""The federation configuration: the example file loads, the environment overrides, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.server.config import ConfigError, FederationConfig

REPO = Path(__file__).resolve().parents[2]


def test_example_config_loads_with_dafnes_defaults() -> None:
    cfg = FederationConfig.load(REPO / "config" / "federation.yaml")
    assert cfg.validation.threshold == 0.7
    assert (cfg.merge.strategy, cfg.merge.weight) == ("linear", 0.5)
    assert cfg.models == ["leg", "thigh"]
    assert cfg.db_url.startswith("sqlite:///") and cfg.db_url.endswith("var/federation/federation.db")
    assert cfg.signing_key_path == Path("var/federation/server_ed25519.pem")


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUREL_FED_VALIDATION__THRESHOLD", "0.75")
    monkeypatch.setenv("LAUREL_FED_MERGE__STRATEGY", "delta")
    cfg = FederationConfig.load(REPO / "config" / "federation.yaml")
    assert cfg.validation.threshold == 0.75 and cfg.merge.strategy == "delta"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"validation": {"threshold": 1.5}}, "validation.threshold"),
        ({"merge": {"strategy": "fedprox"}}, "merge.strategy"),
        ({"merge": {"weight": 0}}, "merge.weight"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"models": ["leg", "leg"]}, "listed twice"),
        ({"dashbord": {}}, "dashbord"),
    ],
)
def test_mistakes_name_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FederationConfig.load(None, **overrides)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        FederationConfig.load(tmp_path / "nope.yaml")
