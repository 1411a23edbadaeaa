"""Site keys (argon2-hashed, prefix lookup, revocation, permissions) and the registry's queue and chain."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.cli import app as federation_app
from federation.server.auth import SiteKeys
from federation.server.registry import (
    ACCEPTED,
    QUEUED,
    VALIDATING,
    Conflict,
    ContentStore,
    NotFound,
    Registry,
    UpdateOutcome,
)
from federation.server.tables import make_engine


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(make_engine(f"sqlite:///{tmp_path / 'fed.db'}"), tmp_path)
    reg.ensure_model("leg", "leg")
    return reg


def test_keys_are_hashed_looked_up_by_prefix_and_revocable(registry: Registry, tmp_path: Path) -> None:
    keys = SiteKeys(registry, cache_seconds=0)
    _, key = keys.add_site("hospital-a", ["leg"])
    assert re.fullmatch(r"lfk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    secret = key.split("_", 2)[2]
    registry.engine.dispose()
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("fed.db*"))
    assert secret.encode() not in db_bytes  # only the argon2 hash is stored
    assert b"$argon2id$" in db_bytes

    authed = keys.authenticate(key)
    assert authed is not None and authed.name == "hospital-a"
    assert authed.may_use("leg") and not authed.may_use("thigh")
    assert keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # right prefix, wrong secret
    assert keys.authenticate("lfk_000000000000_" + "x" * 43) is None
    assert keys.authenticate("not-a-key") is None

    keys.revoke("hospital-a")
    assert keys.authenticate(key) is None
    _, new_key = keys.rotate_key("hospital-a")
    assert keys.authenticate(key) is None
    assert keys.authenticate(new_key) is not None
    with pytest.raises(Conflict):
        keys.add_site("hospital-a")


def test_revocation_beats_the_verification_cache(registry: Registry) -> None:
    keys = SiteKeys(registry, cache_seconds=3600)
    _, key = keys.add_site("b")
    assert keys.authenticate(key) is not None
    other = SiteKeys(registry)  # e.g. the CLI in another process revokes
    other.revoke("b")
    assert keys.authenticate(key) is None


def test_cli_prints_the_key_once_and_never_logs_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "federation.yaml"
    cfg.write_text(f"server: {{data_dir: {tmp_path / 'data'}}}\nmodels: [leg]\n")
    runner = CliRunner()
    with caplog.at_level(logging.DEBUG):
        res = runner.invoke(federation_app, ["add-site", "clinic-1", "--models", "leg", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    key = res.stdout.strip().splitlines()[0]
    assert key.startswith("lfk_")
    assert key not in caplog.text and key.split("_", 2)[2] not in caplog.text
    listed = runner.invoke(federation_app, ["list-sites", "--config", str(cfg)])
    assert "clinic-1" in listed.stdout and "models=leg" in listed.stdout and key not in listed.stdout
    assert runner.invoke(federation_app, ["revoke-site", "clinic-1", "--config", str(cfg)]).exit_code == 0
    assert "REVOKED" in runner.invoke(federation_app, ["list-sites", "--config", str(cfg)]).stdout
    assert runner.invoke(federation_app, ["revoke-site", "nobody", "--config", str(cfg)]).exit_code == 1
    pub = runner.invoke(federation_app, ["keygen", "--config", str(cfg)]).stdout.strip()
    assert runner.invoke(federation_app, ["public-key", "--config", str(cfg)]).stdout.strip() == pub
    assert (tmp_path / "data" / "server_ed25519.pem").stat().st_mode & 0o077 == 0


def test_content_store_is_idempotent_and_detects_corruption(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "objs", ".bin")
    digest = store.put(b"hello")
    assert store.put(b"hello") == digest
    assert store.get(digest) == b"hello"
    store.path(digest).write_bytes(b"HELLO")
    with pytest.raises(Conflict, match="corrupt"):
        store.get(digest)
    with pytest.raises(NotFound):
        store.get("0" * 64)


def _publish(reg: Registry, version: int, parent: int | None) -> None:
    reg.publish(
        "leg",
        version=version,
        parent_version=parent,
        envelope=f"pkg{version}".encode(),
        dice=0.8,
        dice_detail={},
        weight_specs=[],
    )


def test_publish_keeps_a_single_chain(registry: Registry) -> None:
    _publish(registry, 1, None)
    _publish(registry, 2, 1)
    with pytest.raises(Conflict):
        _publish(registry, 3, 1)  # parent is not the newest: a fork
    with pytest.raises(Conflict):
        _publish(registry, 2, 2)
    assert [v.version for v in registry.versions("leg")] == [1, 2]
    assert registry.package_bytes("leg", 2) == b"pkg2"


def test_queue_order_claims_restart_and_idempotency(registry: Registry) -> None:
    _publish(registry, 1, None)
    keys = SiteKeys(registry)
    site, _ = keys.add_site("a")
    ups = [
        registry.add_update(
            model="leg",
            site_id=site.id,
            base_version=1,
            n_slices=5,
            local_dice=0.8,
            client_version=None,
            weights=f"w{i}".encode(),
            idempotency_key=f"key-{i:08d}",
        )
        for i in range(3)
    ]
    again = registry.add_update(
        model="leg",
        site_id=site.id,
        base_version=1,
        n_slices=5,
        local_dice=0.8,
        client_version=None,
        weights=b"w0",
        idempotency_key="key-00000000",
    )
    assert again.uid == ups[0].uid
    with pytest.raises(Conflict, match="different upload"):
        registry.add_update(
            model="leg",
            site_id=site.id,
            base_version=1,
            n_slices=5,
            local_dice=0.8,
            client_version=None,
            weights=b"other",
            idempotency_key="key-00000000",
        )
    first = registry.claim_next()
    assert first is not None and first.uid == ups[0].uid and first.state == VALIDATING
    # A restart puts the interrupted one back, and it comes first again.
    assert registry.requeue_interrupted() == 1
    assert registry.get_update(ups[0].uid).state == QUEUED
    claimed = [registry.claim_next() for _ in range(4)]
    assert [c.uid if c else None for c in claimed] == [u.uid for u in ups] + [None]
    done = registry.finish_update(ups[0].uid, UpdateOutcome(ACCEPTED, version=2, candidate_dice=0.9))
    assert done.state == ACCEPTED and done.finished_at is not None


def test_concurrent_claims_never_hand_out_an_update_twice(registry: Registry) -> None:
    _publish(registry, 1, None)
    site, _ = SiteKeys(registry).add_site("a")
    for i in range(30):
        registry.add_update(
            model="leg",
            site_id=site.id,
            base_version=1,
            n_slices=5,
            local_dice=None,
            client_version=None,
            weights=f"{i}".encode(),
        )
    got: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (u := registry.claim_next()) is not None:
            with lock:
                got.append(u.uid)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 30 and len(set(got)) == 30
