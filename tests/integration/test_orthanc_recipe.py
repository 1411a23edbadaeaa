"""The Orthanc auto-routing recipe of the sysadmin guide (``config/orthanc/laurel-autoroute.lua``), run as
written: each study reaches the node once, the approved SEG goes back to Orthanc and is not routed back to
the node. And a SEG of the node's own that does come back (a study-level rule) is recognised, not listed as
an unrouted series. Real Orthanc, real node, DCMTK storescu as the modality; SYNTHETIC phantom images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.core.db import Series, SeriesState, Study, session_scope
from tests.peers import REPO, free_port, make_image, storescu, wait_until
from tests.workflow_fixtures import RunningNode, phantom_series

pytestmark = [pytest.mark.peers, pytest.mark.slow]
RECIPE = REPO / "config" / "orthanc" / "laurel-autoroute.lua"


def _series(running: RunningNode) -> list[tuple[str, str, int]]:
    with session_scope(running.node.engine) as s:
        return [(se.SeriesInstanceUID, se.state, len(se.instances)) for se in s.scalars(select(Series))]


def test_the_documented_recipe_routes_each_study_once_and_never_loops(
    workflow_node_factory: Callable[..., RunningNode], orthanc_factory: Any, tmp_path: Path
) -> None:
    node_port = free_port()
    orthanc = orthanc_factory(
        modalities={"laurel": ("LAUREL", "127.0.0.1", node_port)},
        # as the guide says: keep the association open between instances routed one by one
        extra_config={"LuaScripts": [str(RECIPE)], "DicomAssociationCloseDelay": 5},
    )
    pacs = {
        "name": "pacs",
        "ae_title": "ORTHANC",
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "send_to_us": True,
        "receive_results": True,
    }
    running = workflow_node_factory(port=node_port, peers=[pacs], node={"settle_seconds": 3.0})
    files, _ph = phantom_series(tmp_path / "study", 8181, n_slices=6)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    sent = storescu(orthanc.dicom_port, files, called_ae="ORTHANC", calling_ae="MODALITY")
    assert sent.returncode == 0, sent.stderr
    study = running.wait_state(uid, {"PENDING_REVIEW"})
    assert study["instance_count"] == len(files)
    approved = running.approve(study["id"], uid)
    assert approved.status_code == 200, approved.text
    running.wait_state(uid, {"EXPORTED"})
    segs = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})
    assert len(segs) == 1
    # Orthanc runs its Lua callbacks in order: once an image sent after the SEG has reached the node, the
    # SEG's callback has run too. It must not have sent the SEG back.
    marker_path = tmp_path / "marker.dcm"
    marker = make_image(generate_uid(), generate_uid(), series_description="SYNTHETIC MARKER")
    marker.save_as(marker_path, enforce_file_format=True)
    assert storescu(orthanc.dicom_port, [marker_path], called_ae="ORTHANC", calling_ae="MODALITY").returncode == 0
    wait_until(lambda: any(s[0] == marker.SeriesInstanceUID for s in _series(running)), 60, 0.2, "the marker")
    series = _series(running)
    assert len(series) == 2  # the MR series once and the marker: no SEG came back
    assert all(state != SeriesState.OWN_RESULT for _uid, state, _n in series)
    assert [n for s_uid, _state, n in series if s_uid != marker.SeriesInstanceUID] == [len(files)]

    # A study-level rule that resends the whole study, SEG included: the node keeps its own SEG apart.
    seg_file = next((running.workdir / "node" / "derived").rglob("approved_seg-*.dcm"))
    back = storescu(running.node.port, [seg_file], calling_ae="ORTHANC", extra=["-R"])
    assert back.returncode == 0, back.stderr
    with session_scope(running.node.engine) as s:
        own = s.scalars(select(Series).where(Series.state == SeriesState.OWN_RESULT)).all()
        assert len(own) == 1 and own[0].model is None
        assert s.scalars(select(Study).where(Study.StudyInstanceUID == uid)).one().state == "EXPORTED"
    from dicom_node.cli.node_commands import status_report

    assert [u["id"] for u in status_report(running.node.config)["unrouted"]] == [
        next(se.id for se in _series_rows(running) if se.SeriesInstanceUID == marker.SeriesInstanceUID)
    ]


def _series_rows(running: RunningNode) -> list[Series]:
    with session_scope(running.node.engine) as s:
        return list(s.scalars(select(Series)))
