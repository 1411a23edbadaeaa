"""Roles on API tokens: operators review; only admins see jobs, dead letters, models and the audit log."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.workflow_fixtures import RunningNode

ADMIN_ROUTES = [
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/dead-letters"),
    ("POST", "/api/v1/dead-letters/1/requeue"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/models/leg"),
    ("POST", "/api/v1/models/leg/pin"),
    ("POST", "/api/v1/models/leg/unpin"),
    ("POST", "/api/v1/models/leg/rollback"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/config"),
    ("PUT", "/api/v1/config"),
    ("POST", "/api/v1/config/validate"),
]


def _token(running: RunningNode, name: str, role: str) -> dict[str, str]:
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token

    with session_scope(running.node.engine) as s:
        return {"Authorization": f"Bearer {create_token(s, name, role)}"}


def test_an_operator_token_reviews_but_gets_403_on_every_admin_route(
    workflow_node_factory: Callable[..., RunningNode],
) -> None:
    running = workflow_node_factory()
    operator = _token(running, "Dr Reader", "operator")
    admin = _token(running, "Sys Admin", "admin")

    assert requests.get(running.url + "/api/v1/studies", headers=operator, timeout=30).status_code == 200
    for method, path in ADMIN_ROUTES:
        r = requests.request(method, running.url + path, headers=operator, json={"revision": 1}, timeout=30)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        detail = r.json()["detail"]
        assert "admin" in detail and "Dr Reader" in detail and "--role admin" in detail, detail

    # The admin passes the role check on the same routes (the answer then depends on the route's own rules).
    for method, path in ADMIN_ROUTES:
        r = requests.request(method, running.url + path, headers=admin, json={"revision": 1}, timeout=30)
        assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)
    assert requests.get(running.url + "/api/v1/jobs", headers=admin, timeout=30).status_code == 200
    # An admin may also review.
    assert requests.get(running.url + "/api/v1/studies", headers=admin, timeout=30).status_code == 200


def test_laurel_token_create_takes_a_role_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    import sqlalchemy as sa
    import yaml

    from dicom_node.core.config import NodeConfig
    from dicom_node.core.review_tables import ApiToken
    from tests.peers import node_settings

    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(node_settings(tmp_path / "node")))

    def laurel(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "dicom_node", "token", "create", *args, "--config", str(config)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    bad = laurel("Sys Admin", "--role", "root")
    assert bad.returncode == 2 and "unknown role 'root'" in bad.stderr, bad.stderr
    assert laurel("Sys Admin", "--role", "admin").returncode == 0
    assert laurel("Dr Reader").returncode == 0

    engine = NodeConfig.load(config).node.engine()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ApiToken.operator, ApiToken.role).order_by(ApiToken.id)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("Sys Admin", "admin"), ("Dr Reader", "operator")]


def test_tokens_made_before_roles_stay_operators(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from dicom_node.core.db import session_scope
    from dicom_node.core.engine import _alembic_config, make_engine
    from dicom_node.core.tokens import identity_for

    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    old = sa.create_engine(url)
    with old.begin() as conn:
        command.upgrade(_alembic_config(conn), "0004_guarded_learning")
        conn.execute(
            sa.text(
                "INSERT INTO api_token (operator, token_sha256, prefix, created_at) "
                "VALUES ('Dr Old', :digest, 'lrl_old', '2026-01-01')"
            ),
            {"digest": hashlib.sha256(b"lrl_old").hexdigest()},
        )
    old.dispose()
    engine = make_engine(url)
    with session_scope(engine) as s:
        who = identity_for(s, "lrl_old")
    engine.dispose()
    assert who is not None and (who.name, who.role, who.is_admin) == ("Dr Old", "operator", False)


@pytest.mark.parametrize("role", ["", "Admin", "superuser"])
def test_create_token_refuses_roles_it_does_not_know(tmp_path: Path, role: str) -> None:
    from dicom_node.core.db import session_scope
    from dicom_node.core.engine import make_engine
    from dicom_node.core.tokens import create_token

    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    with session_scope(engine) as s, pytest.raises(ValueError, match="unknown role"):
        create_token(s, "Someone", role)
    engine.dispose()
