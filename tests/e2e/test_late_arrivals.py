"""Images that arrive after a study settled (a PACS retrying an interrupted transfer, a series added later):
the draft always covers every image of its series before anyone approves it. Real node, DCMTK storescu,
SYNTHETIC phantom series."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests

from tests.peers import wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, send_files

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _draft_slices(running: RunningNode, series_id: int) -> int:
    r = running.get(f"/api/v1/series/{series_id}/labels", params={"version": "draft"})
    return int(np.load(io.BytesIO(r.content)).shape[0]) if r.ok else 0


def _approve(running: RunningNode, study: dict[str, Any]) -> requests.Response:
    return running.approve(study["id"], study["StudyInstanceUID"])


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_a_study_sent_in_two_parts_gets_a_draft_over_every_image(
    workflow_node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    running = workflow_node_factory()
    files, _ph = phantom_series(tmp_path / "a", 6161, n_slices=8)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    send_files(running.node.port, files[:4])  # the transfer is interrupted; the study settles
    study = running.wait_state(uid, {"PENDING_REVIEW"})
    series = running.get(f"/api/v1/studies/{study['id']}").json()["series"][0]
    assert _draft_slices(running, series["id"]) == 4
    send_files(running.node.port, files)  # the PACS retries the whole study
    wait_until(lambda: _draft_slices(running, series["id"]) == 8, 120, 0.2, "a new draft over all 8 images")
    approved = _approve(running, study)
    assert approved.status_code == 200, approved.text

    # A whole series that arrives after its study completed is segmented like any other.
    files_b, _ = phantom_series(tmp_path / "b", 6262, n_slices=6)
    uid_b = str(pydicom.dcmread(files_b[0], stop_before_pixels=True).StudyInstanceUID)
    send_files(running.node.port, files_b)
    study_b = running.wait_state(uid_b, {"PENDING_REVIEW"})
    extra, _ = phantom_series(tmp_path / "b2", 6262, n_slices=6)  # same study, a second series
    second_series = pydicom.uid.generate_uid()
    for path in extra:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = uid_b
        ds.SeriesInstanceUID = second_series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(path, enforce_file_format=True)
    send_files(running.node.port, extra)

    def both_drafted() -> bool:
        detail = running.get(f"/api/v1/studies/{study_b['id']}").json()
        return len(detail["series"]) == 2 and all(se["has_draft"] for se in detail["series"])

    wait_until(both_drafted, 120, 0.2, "the late series' draft")


def test_late_images_after_corrections_wait_for_a_person(
    workflow_node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    running = workflow_node_factory()
    files, ph = phantom_series(tmp_path / "c", 6363, n_slices=8)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    send_files(running.node.port, files[:4])
    study = running.wait_state(uid, {"PENDING_REVIEW"})
    series = running.get(f"/api/v1/studies/{study['id']}").json()["series"][0]
    names = {"SeriesInstanceUID": series["SeriesInstanceUID"]}
    saved = requests.put(
        f"{running.url}/api/v1/series/{series['id']}/labels",
        data=_npy(ph.labels[:4].astype(np.uint8)),
        params=names,
        headers=running.headers,
        timeout=60,
    )
    assert saved.status_code == 200, saved.text
    send_files(running.node.port, files)  # the rest arrives after the radiologist started correcting

    def flagged() -> bool:
        detail = running.get(f"/api/v1/studies/{study['id']}").json()
        return bool(detail["series"][0]["changed_since_draft"])

    wait_until(flagged, 60, 0.2, "the series to be marked changed since its draft")
    refused = _approve(running, study)
    assert refused.status_code == 409 and "re-segment" in refused.json()["detail"]
    corrected = running.get(f"/api/v1/series/{series['id']}/labels", params={"version": "corrected"})
    assert np.load(io.BytesIO(corrected.content)).shape[0] == 4  # the corrections are kept
    asked = requests.post(
        f"{running.url}/api/v1/series/{series['id']}/resegment", json=names, headers=running.headers, timeout=30
    )
    assert asked.status_code == 200, asked.text
    wait_until(lambda: _draft_slices(running, series["id"]) == 8, 120, 0.2, "the new draft")
    approved = _approve(running, study)
    assert approved.status_code == 200, approved.text
    actions = [e["action"] for e in running.get("/api/v1/audit").json()["events"]]
    assert "resegment" in actions
