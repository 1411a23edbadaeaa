"""Identity on every write: labels, approvals and rejections name the DICOM UIDs they are for, and the node
refuses a missing or different one with 409 and stores nothing. Saved corrections are work in progress:
the study stays PENDING_REVIEW, the worklist says who is on it, and they survive a node restart.
Real node (in process), real drafts of SYNTHETIC phantom studies."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import requests

from tests.workflow_fixtures import RunningNode


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _post(running: RunningNode, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(running.url + path, json=body, headers=running.headers, timeout=120)


def test_writes_must_name_their_uids(node_api: RunningNode) -> None:
    first, second = sorted(node_api.studies("PENDING_REVIEW"), key=lambda s: s["id"])
    series = node_api.get(f"/api/v1/studies/{first['id']}").json()["series"][0]
    other_series = node_api.get(f"/api/v1/studies/{second['id']}").json()["series"][0]
    labels = np.load(io.BytesIO(node_api.get(f"/api/v1/series/{series['id']}/labels").content))
    path = f"/api/v1/series/{series['id']}/labels"

    def put(**params: str) -> requests.Response:
        return requests.put(node_api.url + path, data=_npy(labels), params=params, headers=node_api.headers, timeout=60)

    missing = put()
    assert missing.status_code == 409 and "SeriesInstanceUID" in missing.json()["detail"]
    wrong = put(SeriesInstanceUID=other_series["SeriesInstanceUID"])
    assert wrong.status_code == 409 and "another series open" in wrong.json()["detail"]
    assert node_api.get(path, params={"version": "corrected"}).status_code == 404  # nothing was stored

    for action, body in (("approve", {}), ("reject", {"reason": "wrong patient?"})):
        refused = _post(node_api, f"/api/v1/studies/{first['id']}/{action}", body)
        assert refused.status_code == 409 and "StudyInstanceUID" in refused.json()["detail"], action
        other = _post(
            node_api,
            f"/api/v1/studies/{first['id']}/{action}",
            {**body, "StudyInstanceUID": second["StudyInstanceUID"]},
        )
        assert other.status_code == 409 and "another study open" in other.json()["detail"], action
    assert {s["state"] for s in node_api.studies()} == {"PENDING_REVIEW"}

    saved = put(SeriesInstanceUID=series["SeriesInstanceUID"])
    assert saved.status_code == 200, saved.text
    row = next(s for s in node_api.studies() if s["id"] == first["id"])
    assert row["state"] == "PENDING_REVIEW" and row["in_progress_by"] == "Dr Test Reviewer"
    approved = _post(
        node_api, f"/api/v1/studies/{first['id']}/approve", {"StudyInstanceUID": first["StudyInstanceUID"]}
    )
    assert approved.status_code == 200, approved.text
    row = next(s for s in node_api.studies() if s["id"] == first["id"])
    assert row["approved_by"] == "Dr Test Reviewer" and row["in_progress_by"] is None
    rejected = _post(
        node_api,
        f"/api/v1/studies/{second['id']}/reject",
        {"StudyInstanceUID": second["StudyInstanceUID"], "reason": "motion artefacts"},
    )
    assert rejected.status_code == 200, rejected.text


def test_saved_corrections_survive_a_restart(node_api: RunningNode, workflow_node_factory: Any) -> None:
    study = sorted(node_api.studies("PENDING_REVIEW"), key=lambda s: s["id"])[0]
    series = node_api.get(f"/api/v1/studies/{study['id']}").json()["series"][0]
    truth = node_api.truths[int(study["id"])].astype(np.uint8)
    saved = requests.put(
        f"{node_api.url}/api/v1/series/{series['id']}/labels",
        data=_npy(truth),
        params={"SeriesInstanceUID": series["SeriesInstanceUID"]},
        headers=node_api.headers,
        timeout=60,
    )
    assert saved.status_code == 200
    node_api.node.stop()  # the same storage, started again as a new node
    from dicom_node.process.node import build_node

    again = build_node(node_api.node.config)
    again.start()
    try:
        resumed = RunningNode(again, node_api.url, node_api.token, node_api.workdir)
        row = next(s for s in resumed.studies() if s["id"] == study["id"])
        assert row["state"] == "PENDING_REVIEW" and row["in_progress_by"] == "Dr Test Reviewer"
        corrected = resumed.get(f"/api/v1/series/{series['id']}/labels", params={"version": "corrected"})
        assert np.array_equal(np.load(io.BytesIO(corrected.content)), truth)
    finally:
        again.stop()


def test_ids_out_of_range_are_a_4xx_never_a_500(workflow_node_factory: Any) -> None:
    running = workflow_node_factory()
    for path in ("/api/v1/studies/{}", "/api/v1/series/{}/segments", "/api/v1/series/{}/labels"):
        assert running.get(path.format(2**63 - 1)).status_code in (404, 409)
        for bad in (2**63, 2**70, 0, -1):
            r = running.get(path.format(bad))
            assert r.status_code == 422, (path, bad, r.status_code)
    r = requests.post(f"{running.url}/api/v1/dead-letters/{2**64}/requeue", headers=running.headers, timeout=30)
    assert r.status_code == 422
