"""Amending an approved study: reopened with the approved labels as the starting correction, approved again;
the PACS then holds a new SEG that references the one it supersedes, and the model learns from the amendment.
Real node, Orthanc as the PACS, dciodvfy; SYNTHETIC phantom study."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests

from tests.peers import dciodvfy, wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, send_files

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _post(running: RunningNode, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(running.url + path, json=body, headers=running.headers, timeout=120)


def test_an_approved_study_is_amended_and_the_pacs_holds_the_new_seg(
    workflow_node_factory: Callable[..., RunningNode], orthanc_factory: Any, tmp_path: Path
) -> None:
    orthanc = orthanc_factory()
    pacs = {
        "name": "pacs",
        "ae_title": "ORTHANC",
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "send_to_us": False,
        "receive_results": True,
    }
    sender = {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}
    running = workflow_node_factory(peers=[sender, pacs])
    files, ph = phantom_series(tmp_path / "p", 9191, n_slices=6)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    send_files(running.node.port, files)
    study = running.wait_state(uid, {"PENDING_REVIEW"})
    names = {"StudyInstanceUID": uid}
    approved = _post(running, f"/api/v1/studies/{study['id']}/approve", names)
    assert approved.status_code == 200, approved.text
    running.wait_state(uid, {"EXPORTED"})
    first = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}, "Expand": True})
    assert len(first) == 1
    first_uid = first[0]["MainDicomTags"]["SOPInstanceUID"]

    # Identity and a reason are required; nothing changes otherwise.
    assert _post(running, f"/api/v1/studies/{study['id']}/amend", {"reason": "x"}).status_code == 409
    assert _post(running, f"/api/v1/studies/{study['id']}/amend", {**names, "reason": ""}).status_code == 422
    amended = _post(running, f"/api/v1/studies/{study['id']}/amend", {**names, "reason": "missed a muscle"})
    assert amended.status_code == 200, amended.text
    row = next(s for s in running.studies() if s["id"] == study["id"])
    assert row["state"] == "PENDING_REVIEW" and row["in_progress_by"] == "Dr Test Reviewer"
    series = running.get(f"/api/v1/studies/{study['id']}").json()["series"][0]
    start = np.load(io.BytesIO(running.get(f"/api/v1/series/{series['id']}/labels").content))
    approved_before = np.load(
        io.BytesIO(running.get(f"/api/v1/series/{series['id']}/labels", params={"version": "corrected"}).content)
    )
    assert np.array_equal(start, approved_before)  # the amendment starts from what was approved
    truth = ph.labels.astype(np.uint8)
    buf = io.BytesIO()
    np.save(buf, truth, allow_pickle=False)
    put = requests.put(
        f"{running.url}/api/v1/series/{series['id']}/labels",
        data=buf.getvalue(),
        params={"SeriesInstanceUID": series["SeriesInstanceUID"]},
        headers=running.headers,
        timeout=60,
    )
    assert put.status_code == 200, put.text
    again = _post(running, f"/api/v1/studies/{study['id']}/approve", names)
    assert again.status_code == 200, again.text
    running.wait_state(uid, {"EXPORTED"})

    segs = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})
    assert len(segs) == 2
    newest = next(
        pydicom.dcmread(io.BytesIO(requests.get(f"{orthanc.url}/instances/{i}/file", timeout=30).content))
        for i in segs
        if orthanc.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] != first_uid
    )
    referenced = {
        str(r.ReferencedSOPInstanceUID) for s in newest.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence
    }
    assert first_uid in referenced and "supersedes" in str(newest.ContentDescription)
    newest_file = tmp_path / "amended.dcm"
    newest.save_as(newest_file, enforce_file_format=True)
    assert [line for line in dciodvfy(newest_file) if "Error" in line] == []

    def learned_twice() -> bool:
        revs = running.get("/api/v1/models/leg").json()["revisions"]
        return len([r for r in revs if r["source"] == "local"]) == 2

    wait_until(learned_twice, 300, 0.5, "both approvals to be learned")
    actions = [e["action"] for e in running.get("/api/v1/audit").json()["events"]]
    assert actions.count("approve") == 2 and "amend" in actions
