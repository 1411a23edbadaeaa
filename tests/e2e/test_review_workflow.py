"""Acceptance of the approval workflow with real peers (SYNTHETIC phantom data).

storescu sends a phantom leg study → the node drafts a SEG → the operator corrects and approves through
the API → the approved SEG is in Orthanc (read back over REST and parsed with highdicom) → the node learned
a new local model revision → dciodvfy finds no error in the draft and the approved SEG.
"""

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
from tests.workflow_fixtures import OPERATOR, RunningNode, phantom_series, send_files

#: Each test runs on both index backends: SQLite (the default) and PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("db_backend")]


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _job(running: RunningNode, kind: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        jobs = running.get("/api/v1/jobs", params={"kind": kind}).json()["jobs"]
        dead = [j for j in jobs if j["state"] == "DEAD"]
        assert not dead, dead[0]["last_error"]
        finished = [j for j in jobs if j["state"] == "DONE"]
        return finished[0] if finished else None

    result: dict[str, Any] = wait_until(done, timeout, 0.3, f"a {kind} job to finish")
    return result


def test_phantom_study_to_approved_seg_in_orthanc(
    workflow_node_factory: Callable[..., RunningNode], orthanc_factory: Callable[..., Any], tmp_path: Path
) -> None:
    import highdicom as hd

    orthanc = orthanc_factory()
    running = workflow_node_factory(
        peers=[
            {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104},
            {
                "name": "pacs",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                "send_to_us": False,
                "receive_results": True,
            },
        ]
    )
    files, ph = phantom_series(tmp_path / "phantom", seed=777)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    send_files(running.node.port, files)

    # Unauthenticated calls are refused.
    assert requests.get(running.url + "/api/v1/studies", timeout=10).status_code == 401
    bad = requests.get(running.url + "/api/v1/studies", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert bad.status_code == 401 and "laurel token create" in bad.json()["detail"]

    study = running.wait_state(str(source.StudyInstanceUID), {"PENDING_REVIEW", "FAILED"})
    assert study["state"] == "PENDING_REVIEW", study["failure_reason"]
    detail = running.get(f"/api/v1/studies/{study['id']}").json()
    series = next(se for se in detail["series"] if se["has_draft"])
    assert series["model"] == "leg"

    draft = np.load(io.BytesIO(running.get(f"/api/v1/series/{series['id']}/labels?version=draft").content))
    assert draft.shape == ph.labels.shape and draft.dtype == np.uint8
    volume = running.get(f"/api/v1/series/{series['id']}/volume")
    assert volume.headers["X-Laurel-Spacing"]
    assert np.load(io.BytesIO(volume.content), allow_pickle=False).shape == ph.labels.shape

    # The operator's correction: ground truth with one muscle erased on one slice (so it differs from both).
    edited = ph.labels.astype(np.uint8).copy()
    z = int(np.argmax((edited == 1).sum(axis=(1, 2))))
    edited[z][edited[z] == 1] = 0
    names = {"SeriesInstanceUID": series["SeriesInstanceUID"]}  # every write names what it is for
    wrong = requests.put(
        f"{running.url}/api/v1/series/{series['id']}/labels",
        data=_npy(edited[:-1]),
        params=names,
        headers=running.headers,
        timeout=60,
    )
    assert wrong.status_code == 422 and "shape" in wrong.json()["detail"]
    put = requests.put(
        f"{running.url}/api/v1/series/{series['id']}/labels",
        data=_npy(edited),
        params=names,
        headers=running.headers,
        timeout=60,
    )
    assert put.status_code == 200, put.text
    approve = requests.post(
        f"{running.url}/api/v1/studies/{study['id']}/approve",
        json={"comment": "checked", "StudyInstanceUID": study["StudyInstanceUID"]},
        headers=running.headers,
        timeout=300,
    )
    assert approve.status_code == 200, approve.text
    body = approve.json()
    assert body["state"] == "APPROVED"
    assert 0.0 <= body["dice"][str(series["id"])]["overall"] <= 1.0
    assert {j["kind"] for j in body["jobs"]} >= {"export", "learn"}

    again = requests.post(
        f"{running.url}/api/v1/studies/{study['id']}/approve",
        json={"StudyInstanceUID": study["StudyInstanceUID"]},
        headers=running.headers,
        timeout=60,
    )
    assert again.status_code == 409

    # The approved SEG arrives in Orthanc; read it back through REST and parse it with highdicom.
    running.wait_state(str(source.StudyInstanceUID), {"EXPORTED"}, timeout=120)
    segs = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})
    assert len(segs) == 1
    raw = requests.get(f"{orthanc.url}/instances/{segs[0]}/file", timeout=30).content
    seg = hd.seg.segread(io.BytesIO(raw))
    assert str(seg.ContentCreatorName).rstrip("^") == OPERATOR
    assert "DRAFT" not in str(seg.SeriesDescription).upper()
    assert seg.get_segment_description(1).SegmentAlgorithmType == "SEMIAUTOMATIC"
    referenced = {str(r.SeriesInstanceUID) for r in seg.ReferencedSeriesSequence}
    assert referenced == {str(source.SeriesInstanceUID)}
    from dicom_node.dicom.seg import read_seg
    from dicom_node.dicom.volume import load_series

    assert np.array_equal(read_seg(pydicom.dcmread(io.BytesIO(raw)), load_series(files)), edited)

    # The node learned from the correction: a new local revision.
    learn = _job(running, "learn")
    assert learn["result"]["slices"] >= 5
    state = running.get("/api/v1/models/leg").json()
    local = [r for r in state["revisions"] if r["source"] == "local"]
    assert local and state["active_revision"] == local[-1]["revision"]

    # dciodvfy: no errors on the draft and the approved SEG.
    result_dir = running.workdir / "node" / "derived" / str(study["id"]) / str(series["id"])
    approved_files = list(result_dir.glob("approved_seg-*.dcm"))
    assert [p.name for p in approved_files] == [f"approved_seg-{seg.SOPInstanceUID}.dcm"]
    (draft_file,) = result_dir.glob("draft_seg-*.dcm")
    for path in (draft_file, approved_files[0]):
        errors = [line for line in dciodvfy(path) if "Error" in line]
        assert errors == [], (path.name, errors)

    audit = running.get("/api/v1/audit").json()["events"]
    assert {e["action"] for e in audit} >= {"correct", "approve"}
    assert all(e["operator"] == OPERATOR for e in audit)


def test_study_the_model_cannot_take_fails_with_reason(
    workflow_node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    running = workflow_node_factory()
    files, _ph = phantom_series(tmp_path / "phantom", seed=778)
    single = files[:1]  # one slice of an axial series
    send_files(running.node.port, single)
    uid = str(pydicom.dcmread(single[0], stop_before_pixels=True).StudyInstanceUID)
    study = running.wait_state(uid, {"FAILED", "PENDING_REVIEW"})
    assert study["state"] == "FAILED"
    assert "single slice" in study["failure_reason"]
    listed = running.studies("FAILED")
    assert [s["failure_reason"] for s in listed] == [study["failure_reason"]]
    reject = requests.post(
        f"{running.url}/api/v1/studies/{study['id']}/reject",
        json={"reason": "", "StudyInstanceUID": study["StudyInstanceUID"]},
        headers=running.headers,
        timeout=30,
    )
    assert reject.status_code == 422
