"""The node's model registry: zoo seeding, signed local revisions, pin, unpin, rollback, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_node.core.engine import make_engine
from dicom_node.work.learning import ModelRegistry, RegistryError
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
    data = registry.file_path(new).read_bytes()
    assert not Path(new.path).is_absolute()  # recorded relative to the registry folder
    assert load(data, [registry.node_public_key]).version == learned.version
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


def _fresh_process(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, check=False
    )


def test_every_revision_loads_in_a_fresh_process_and_after_a_move(registry: ModelRegistry, tmp_path: Path) -> None:
    """The 0.1 bug: the zoo revision was an unsigned re-serialisation only the in-memory cache could load."""
    import shutil

    rev, pkg = registry.active("leg")
    from models.zoo import package_path

    assert registry.file_path(rev).read_bytes() == package_path("leg").read_bytes()  # byte for byte
    registry.add(pkg.with_weights(pkg.weights, version=pkg.version + 1), source="local", parent_revision=1)
    moved = tmp_path.parent / f"{tmp_path.name}-restored"
    shutil.copytree(tmp_path, moved)  # a backup restored at another path
    code = f"""
from pathlib import Path
from dicom_node.core.engine import make_engine
from dicom_node.work.learning import ModelRegistry
root = Path({str(moved)!r})
reg = ModelRegistry(make_engine(f"sqlite:///{{root / 'index.db'}}"), root / "models", root / "node_key.pem")
for r in (1, 2):
    print(r, reg.package(reg.revision("leg", r)).version)
"""
    done = _fresh_process(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", str(pkg.version), "2", str(pkg.version + 1)]


def test_a_zoo_revision_stored_by_0_1_is_repaired(registry: ModelRegistry) -> None:
    from models.package import dumps

    rev, pkg = registry.active("leg")
    bogus = dumps(pkg)  # what 0.1 stored: a re-serialisation, unsigned, whose hash the zoo does not list
    legacy = registry.models_dir / "leg" / "r0001-legacy.laurel"
    legacy.write_bytes(bogus)
    from sqlalchemy import update

    from dicom_node.core.db import session_scope
    from dicom_node.core.model_tables import ModelRevision
    from models.signing import sha256_hex

    with session_scope(registry.engine) as s:
        s.execute(update(ModelRevision).values(path=str(legacy), sha256=sha256_hex(bogus)))
    fresh = ModelRegistry(registry.engine, registry.models_dir, registry.models_dir.parent / "node_key.pem")
    assert fresh.package(fresh.revision("leg", 1)).version == pkg.version
    repaired = fresh.revision("leg", 1)
    assert fresh.file_path(repaired).read_bytes() == registry.file_path(rev).read_bytes()


def test_one_source_key_one_revision(registry: ModelRegistry) -> None:
    _rev, pkg = registry.active("leg")
    learned = pkg.with_weights(pkg.weights, version=pkg.version + 1)
    first = registry.add(learned, source="local", parent_revision=1, source_key="approval:1.2.3")
    again = registry.add(learned, source="local", parent_revision=1, source_key="approval:1.2.3")
    assert first.revision == again.revision == 2
    assert [r["revision"] for r in registry.state("leg")["revisions"]] == [1, 2]
    assert registry.find("leg", "approval:1.2.3") is not None and registry.find("leg", "approval:9") is None


def test_the_lease_is_one_job_at_a_time_and_freed_by_a_dead_holder(registry: ModelRegistry) -> None:
    from dicom_node.core.db import Job, session_scope
    from dicom_node.core.jobs import enqueue

    with session_scope(registry.engine) as s:
        a = enqueue(s, "learn", {"series_id": 1})
        b = enqueue(s, "learn", {"series_id": 2})
        a.state = b.state = "RUNNING"
        a_id, b_id = a.id, b.id
    assert registry.acquire_lease("leg", a_id, 60) is None
    assert registry.acquire_lease("leg", a_id, 60) is None  # the holder may take it again
    assert registry.acquire_lease("leg", b_id, 60) == a_id  # the other waits
    with session_scope(registry.engine) as s:  # the holder's process died: its job was queued again
        s.get(Job, a_id).state = "QUEUED"  # type: ignore[union-attr]
    assert registry.acquire_lease("leg", b_id, 60) is None
    registry.release_lease("leg", a_id)  # not the holder any more: nothing happens
    assert registry.acquire_lease("leg", a_id, 60) == b_id
    registry.release_lease("leg", b_id)
    assert registry.acquire_lease("leg", a_id, 60) is None


def test_the_lease_of_a_job_past_its_job_lease_is_free(registry: ModelRegistry) -> None:
    """A holder whose runner stopped renewing its claim (another host died) frees the model for the next job."""
    from datetime import timedelta

    from dicom_node.core.db import Job, session_scope, utcnow
    from dicom_node.core.jobs import enqueue

    with session_scope(registry.engine) as s:
        a = enqueue(s, "learn", {"series_id": 1})
        b = enqueue(s, "learn", {"series_id": 2})
        a.state = b.state = "RUNNING"
        a.lease_until = b.lease_until = utcnow() + timedelta(seconds=60)
        a_id, b_id = a.id, b.id
    assert registry.acquire_lease("leg", a_id, 600) is None
    assert registry.acquire_lease("leg", b_id, 600) == a_id  # a's runner renews its claim: b waits
    with session_scope(registry.engine) as s:
        s.get(Job, a_id).lease_until = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    assert registry.acquire_lease("leg", b_id, 600) is None


def test_a_long_step_renews_its_lease_and_records_nothing_once_it_lost_it(registry: ModelRegistry) -> None:
    """The learning lease expires (LEASE_SECONDS) unless renewed: the step renews it as it learns; a step
    whose lease expired and was taken must not record its candidate over the new holder's work."""
    from datetime import timedelta
    from types import SimpleNamespace

    from dicom_node.core.db import session_scope, utcnow
    from dicom_node.core.jobs import JobDeferred, enqueue
    from dicom_node.core.model_tables import ModelState
    from dicom_node.work.learning_jobs import LeaseKeeper

    with session_scope(registry.engine) as s:
        a = enqueue(s, "learn", {"series_id": 1})
        b = enqueue(s, "learn", {"series_id": 2})
        a.state = b.state = "RUNNING"
        a.lease_until = b.lease_until = utcnow() + timedelta(seconds=60)  # both runners alive
        a_id, b_id = a.id, b.id

    def lease_until() -> object:
        with session_scope(registry.engine) as s:
            return s.get(ModelState, "leg").lease_until  # type: ignore[union-attr]

    assert registry.acquire_lease("leg", a_id, 1) is None
    first = lease_until()
    keeper = LeaseKeeper(SimpleNamespace(registry=registry), "leg", a_id, seconds=600)  # type: ignore[arg-type]
    keeper(0.5)  # throttled: renewed at most every seconds / 6
    assert lease_until() == first
    keeper.check()  # renewed now: another live job cannot take it when the first second is over
    assert lease_until() > first  # type: ignore[operator]
    with session_scope(registry.engine) as s:
        s.get(ModelState, "leg").lease_until = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    assert registry.acquire_lease("leg", b_id, 600) is None  # a did not renew in time: b takes the model
    assert registry.renew_lease("leg", a_id, 600) is False
    with pytest.raises(JobDeferred, match="learning lease was lost"):
        keeper.check()
    assert registry.renew_lease("leg", b_id, 600) is True
