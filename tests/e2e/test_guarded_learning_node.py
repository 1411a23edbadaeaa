"""Guarded learning in a running node: with the default ``defer`` fallback the first approvals fill the
reference set and change no model; once it holds ``min_reference_cases`` series, an approval is learned and
judged on it. SYNTHETIC phantom studies, real learning, the node's HTTP API.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.peers import wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, send_files

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _approve_one(running: RunningNode, tmp_path: Path, seed: int, nth: int) -> dict[str, Any]:
    """Send a phantom study, approve its draft, and return its learn job (the ``nth``) once it ended."""
    files, _ph = phantom_series(tmp_path / f"p{seed}", seed, n_slices=6)
    send_files(running.node.port, files)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    study = running.wait_state(uid, {"PENDING_REVIEW"})
    r = running.approve(int(study["id"]), uid)
    assert r.status_code == 200, r.text

    def learned() -> dict[str, Any] | None:
        jobs = sorted(running.get("/api/v1/jobs", params={"kind": "learn"}).json()["jobs"], key=lambda j: j["id"])
        return jobs[-1] if len(jobs) == nth and jobs[-1]["state"] in {"DONE", "DEAD"} else None

    return wait_until(learned, 300, 0.5, f"the learn job of study {seed}")


def test_the_first_approvals_fill_the_reference_set_before_anything_is_learned(
    workflow_node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    running = workflow_node_factory(learning={"guard": True, "min_reference_cases": 1, "reference_cases": 2})
    first = _approve_one(running, tmp_path, 6161, 1)
    assert first["state"] == "DONE", first
    result = first["result"]
    assert result["kept_as"] == "reference" and result["slices"] == 0 and not result["activated"]
    assert "not learned yet" in result["deferred"] and "learning.fallback: defer" in result["deferred"]
    state = running.get("/api/v1/models/leg").json()
    assert [r for r in state["revisions"] if r["source"] == "local"] == []  # no model changed
    assert [c["role"] for c in state["site_cases"]] == ["reference"]

    # the reference set holds min_reference_cases series now: the next approval is learned and judged on it
    second = _approve_one(running, tmp_path, 6262, 2)
    assert second["state"] == "DONE", second
    assert second["result"]["slices"] >= 5 and "deferred" not in second["result"]
    assert second["result"]["verdict"].startswith(("accepted:", "rejected:"))
    assert "1 reference series" in second["result"]["verdict"]
    state = running.get("/api/v1/models/leg").json()
    local = [r for r in state["revisions"] if r["source"] == "local"]
    assert len(local) == 1 and local[0]["parent_revision"] == 1  # learned from the zoo revision
    assert local[0]["source_key"] != state["site_cases"][0]["source_key"]  # the reference series was not learned
    assert sorted(c["role"] for c in state["site_cases"]) == ["reference", "replay"]
