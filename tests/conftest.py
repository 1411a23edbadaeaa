"""Shared fixtures: an in-process node, real peers (Orthanc, DCMTK storescp, PostgreSQL), a synthetic study.

Classes and helpers live in :mod:`tests.peers`; areas may add fixtures in their own ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import (
    DcmtkStorescp,
    OrthancProcess,
    PostgresServer,
    StudyFiles,
    index_url_factory,
    node_settings,
    postgres_bin_dir,
    write_study,
)


@pytest.fixture
def node_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Start in-process nodes (``dicom_node.process.node.Node``) with test settings; all are stopped afterwards.

    ``node_factory(**overrides)`` takes the keyword arguments of :func:`tests.peers.node_settings`; in a test
    that uses ``db_backend``, each node's index is on that backend.
    """
    from dicom_node.core.config import NodeConfig
    from dicom_node.process.node import Node

    nodes: list[Node] = []
    new_index = index_url_factory(request)

    def make(start: bool = True, **overrides: Any) -> Node:
        url = new_index()
        if url is not None:
            overrides["node"] = {"database_url": url, **overrides.get("node", {})}
        settings = node_settings(tmp_path / f"node{len(nodes)}", **overrides)
        node = Node(NodeConfig.load(None, **settings))
        nodes.append(node)
        if start:
            node.start()
        return node

    yield make
    for node in reversed(nodes):
        node.stop()


@pytest.fixture
def node(node_factory: Callable[..., Any]) -> Any:
    """A started in-process node: AE LAUREL on a free port, peers STORESCU/ECHOSCU from 127.0.0.1."""
    return node_factory()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancProcess]]:
    """Start Orthanc processes (skips when Orthanc is not installed); all are stopped by PID afterwards."""
    started: list[OrthancProcess] = []

    def make(**kwargs: Any) -> OrthancProcess:
        orthanc = OrthancProcess(tmp_path / f"orthanc{len(started)}", **kwargs)
        started.append(orthanc)
        return orthanc.start()

    yield make
    for orthanc in started:
        orthanc.stop()


@pytest.fixture
def storescp_factory(tmp_path: Path) -> Iterator[Callable[..., DcmtkStorescp]]:
    """Create DCMTK storescp peers (not started: call ``.start()``); all are stopped by PID afterwards."""
    created: list[DcmtkStorescp] = []

    def make(**kwargs: Any) -> DcmtkStorescp:
        scp = DcmtkStorescp(tmp_path / f"storescp{len(created)}", **kwargs)
        created.append(scp)
        return scp

    yield make
    for scp in created:
        scp.stop()


@pytest.fixture
def study(tmp_path: Path) -> StudyFiles:
    """A synthetic MR study on disk: 3 series × 3 instances (32×32)."""
    return write_study(tmp_path / "study", series=3, instances=3)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skips when PostgreSQL is not installed); stopped by PID afterwards."""
    import tempfile

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (scripts/setup.sh installs the postgresql package)")
    workdir = Path(tempfile.mkdtemp(prefix="laurel-pg-"))  # not under pytest's 0700 tree: the postgres user reads it
    server = PostgresServer(bin_dir, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    """Each index backend in turn; nodes made by the factories of a test that uses it run on it."""
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty index database on each backend: a SQLite file, then a PostgreSQL database."""
    return index_url_factory(request)() or f"sqlite:///{tmp_path / 'index.db'}"


# Whole-node fixtures (spine + workflow + API): workflow_node_factory, node_api.
pytest_plugins = ["tests.workflow_fixtures"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A test PKI for DICOM TLS (:mod:`tests.certs`): a CA, the node's and a peer's certificates, a rogue one."""
    from tests.certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))
