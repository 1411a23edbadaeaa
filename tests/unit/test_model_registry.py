"""The node's model registry: zoo seeding, signed local revisions, pin, unpin, rollback, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_node.db import make_engine
from dicom_node.learning import ModelRegistry, RegistryError
from models.package import UntrustedPackage, load

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    return ModelRegistry(engine, tmp_path / "models", tmp_path / "node_key.pem")


def test_zoo_seed_then_local_revision_becomes_active(registry: ModelRegistry) -> None:
    rev, pkg = registry.active("leg")
    assert (rev.revision, rev.source) == (1, "zoo")
    learned = pkg.with_weights(pkg.weights, version=pkg.version + 1, parent_version=pkg.version)
    new = registry.add(learned, source="local", parent_revision=rev.revision, note="test")
    state = registry.state("leg")
    assert state["active_revision"] == new.revision == 2
    assert new.federation_version == rev.federation_version  # a local revision descends from its base
    # The stored local file is signed by the node's key: it loads with that key and with nothing else.
    data = Path(new.path).read_bytes()
    assert load(data, registry.trusted_keys).version == learned.version
    with pytest.raises(UntrustedPackage):
        load(data, [], allow_zoo=True)


def test_pin_keeps_the_revision_and_rollback_goes_back(registry: ModelRegistry) -> None:
    _rev, pkg = registry.active("leg")
    registry.pin("leg")
    registry.add(pkg.with_weights(pkg.weights, version=pkg.version + 1), source="local", parent_revision=1)
    assert registry.state("leg")["active_revision"] == 1  # pinned: stored, not activated
    assert registry.unpin("leg")["active_revision"] == 2
    state = registry.rollback("leg", 1)
    assert state["active_revision"] == 1 and state["pinned"]
    with pytest.raises(RegistryError, match="no revision 9"):
        registry.rollback("leg", 9)
    with pytest.raises(RegistryError, match="no model named"):
        registry.active("elbow")


def test_cli_pin_and_revisions(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({"node": {"storage_dir": str(tmp_path / "store")}}))

    def laurel(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dicom_node", "model", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            check=False,
        )

    shown = laurel("revisions", "leg")
    assert shown.returncode == 0, shown.stderr
    assert "active revision 1" in shown.stdout and "zoo" in shown.stdout
    pinned = laurel("pin", "leg")
    assert pinned.returncode == 0 and "PINNED" in pinned.stdout
    missing = laurel("rollback", "leg", "5")
    assert missing.returncode == 1 and "no revision 5" in missing.stderr
