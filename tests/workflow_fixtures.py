"""Fixtures of the whole node (spine + workflow + API) running in the test process, fed SYNTHETIC phantoms.

``workflow_node_factory(**overrides)`` starts nodes built by :func:`dicom_node.process.node.build_node` with the
API on a free port; ``node_api`` is one such node holding two phantom leg studies in PENDING_REVIEW, with
``url`` and ``token`` for HTTP clients (the review station's acceptance tests use it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.peers import free_port, index_url_factory, node_settings, storescu, wait_until

OPERATOR = "Dr Test Reviewer"


@dataclass
class RunningNode:
    """A started workflow node with its API URL and an operator token."""

    node: Any
    url: str
    token: str
    workdir: Path
    truths: dict[int, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of the operator."""
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """An authenticated GET."""
        return requests.get(self.url + path, headers=self.headers, timeout=120, **kwargs)

    def approve(self, study_id: int, study_uid: str, **body: Any) -> requests.Response:
        """``POST /approve`` naming the study by its StudyInstanceUID (as every write must)."""
        return requests.post(
            f"{self.url}/api/v1/studies/{study_id}/approve",
            json={"StudyInstanceUID": study_uid, **body},
            headers=self.headers,
            timeout=120,
        )

    def studies(self, state: str | None = None) -> list[dict[str, Any]]:
        """The worklist (optionally one state)."""
        params = {"state": state} if state else {}
        r = self.get("/api/v1/studies", params=params)
        r.raise_for_status()
        studies: list[dict[str, Any]] = r.json()["studies"]
        return studies

    def wait_state(self, study_uid: str, states: set[str], timeout: float = 180) -> dict[str, Any]:
        """Poll the worklist until the study with this UID is in one of ``states``."""

        def found() -> dict[str, Any] | None:
            for st in self.studies():
                if st["StudyInstanceUID"] == study_uid and st["state"] in states:
                    return st
            return None

        result: dict[str, Any] = wait_until(found, timeout, 0.2, f"study in {sorted(states)}")
        return result


def phantom_series(
    out: Path, seed: int, *, contrast: str = "t1", n_slices: int = 8, matrix: int = 256
) -> tuple[list[Path], Any]:
    """A SYNTHETIC leg phantom written as an MR series; returns the files and the phantom."""
    from models.phantom import PhantomSpec, generate, write_series

    ph = generate(PhantomSpec(region="leg", contrast=contrast, seed=seed, n_slices=n_slices, matrix=matrix))  # type: ignore[arg-type]
    return write_series(ph, out), ph


def results_peer(name: str, ae_title: str, port: int) -> dict[str, Any]:
    """A peer on loopback that receives the node's results (and does not send to it)."""
    return {
        "name": name,
        "ae_title": ae_title,
        "host": "127.0.0.1",
        "port": port,
        "send_to_us": False,
        "receive_results": True,
    }


def send_files(port: int, files: list[Path], calling_ae: str = "STORESCU", called_ae: str = "LAUREL") -> None:
    """Send files to the node with DCMTK storescu (TCP_NODELAY=1); it must report no failure."""
    proc = storescu(port, files, calling_ae=calling_ae, called_ae=called_ae)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def workflow_node_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., RunningNode]]:
    """Start whole nodes (API on a free port, leg routing by SeriesDescription); stopped afterwards.

    In a test that uses the ``db_backend`` fixture, each node's index is on that backend (a new PostgreSQL
    database per node, or the default SQLite file).
    """
    from dicom_node.core.config import NodeConfig
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token
    from dicom_node.process.node import build_node

    started: list[RunningNode] = []
    new_index = index_url_factory(request)

    def make(**overrides: Any) -> RunningNode:
        workdir = tmp_path / f"wnode{len(started)}"
        api_port = free_port()
        url = new_index()
        if url is not None:
            overrides["node"] = {"database_url": url, **overrides.get("node", {})}
        routing = overrides.pop("routing", [{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}])
        settings = node_settings(
            workdir,
            routing=routing,
            api={"enabled": True, "host": "127.0.0.1", "port": api_port},
            **overrides,
        )
        node = build_node(NodeConfig.load(None, **settings))
        with session_scope(node.engine) as s:
            token = create_token(s, OPERATOR, "admin")
        node.start()
        running = RunningNode(node=node, url=f"http://127.0.0.1:{api_port}", token=token, workdir=workdir)
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        running.node.stop()


@pytest.fixture
def node_api(workflow_node_factory: Callable[..., RunningNode], tmp_path: Path) -> RunningNode:
    """A whole node holding two SYNTHETIC phantom leg studies in PENDING_REVIEW."""
    running = workflow_node_factory()
    for seed in (4242, 4343):
        files, ph = phantom_series(tmp_path / f"phantom{seed}", seed)
        send_files(running.node.port, files)
        import pydicom

        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        st = running.wait_state(uid, {"PENDING_REVIEW", "FAILED"})
        assert st["state"] == "PENDING_REVIEW", st["failure_reason"]
        running.truths[int(st["id"])] = ph.labels
    return running


@pytest.fixture
def filed_node_factory(tmp_path: Path) -> Iterator[Callable[..., RunningNode]]:
    """Start whole nodes from a YAML file (``node.yaml`` in ``workdir``), so the API and console can save and
    reload it (``build_node(cfg, config_path)``); each with an admin token, stopped afterwards."""
    import yaml

    from dicom_node.core.config import NodeConfig
    from dicom_node.core.db import session_scope
    from dicom_node.core.tokens import create_token
    from dicom_node.process.node import build_node

    started: list[RunningNode] = []

    def make(**overrides: Any) -> RunningNode:
        workdir = tmp_path / f"filed{len(started)}"
        api_port = free_port()
        overrides.setdefault("routing", [{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}])
        settings = node_settings(
            workdir / "node", api={"enabled": True, "host": "127.0.0.1", "port": api_port}, **overrides
        )
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "node.yaml"
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        node = build_node(NodeConfig.load(path), config_path=path)
        with session_scope(node.engine) as s:
            token = create_token(s, OPERATOR, "admin")
        node.start()
        started.append(RunningNode(node=node, url=f"http://127.0.0.1:{api_port}", token=token, workdir=workdir))
        return started[-1]

    yield make
    for running in reversed(started):
        running.node.stop()
