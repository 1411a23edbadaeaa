"""Orthanc → node: a study sent with Orthanc's /modalities/{peer}/store (how a PACS auto-routes) arrives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.db import Study, StudyState, session_scope
from tests.peers import free_port, wait_until, write_study

pytestmark = pytest.mark.peers


def test_orthanc_routes_a_study_to_the_node(node_factory: Any, orthanc_factory: Any, tmp_path: Path) -> None:
    node_port = free_port()
    orthanc = orthanc_factory(modalities={"laurel": ("LAUREL_LEG", "127.0.0.1", node_port)})
    node = node_factory(
        port=node_port,
        peers=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}],
        routing=[{"model": "leg", "called_ae": "LAUREL_LEG"}],
    )
    study = write_study(tmp_path / "study", series=3, instances=3)
    orthanc.upload(study.paths)
    orthanc.store_to("laurel", [orthanc.study_id(study.study_uid)])
    with session_scope(node.engine) as session:
        row = session.scalars(select(Study).where(Study.StudyInstanceUID == study.study_uid)).one()
        assert len(row.series) == 3
        assert sorted(i.SOPInstanceUID for s in row.series for i in s.instances) == sorted(study.sop_instance_uids)
        assert {(s.calling_ae, s.called_ae, s.model) for s in row.series} == {("ORTHANC", "LAUREL_LEG", "leg")}
        study_id = row.id

    def complete() -> bool:
        with session_scope(node.engine) as session:
            found = session.get(Study, study_id)
            return found is not None and found.state == StudyState.COMPLETE

    wait_until(complete, 30, 0.1, "the routed study to complete")


def test_orthanc_echo_reaches_the_node(node_factory: Any, orthanc_factory: Any) -> None:
    node_port = free_port()
    orthanc = orthanc_factory(modalities={"laurel": ("LAUREL", "127.0.0.1", node_port)})
    node_factory(
        port=node_port, peers=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}]
    )
    assert orthanc.post("/modalities/laurel/echo", {}) == {}
