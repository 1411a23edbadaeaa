"""Orthanc → node: a study sent with Orthanc's /modalities/{peer}/store (how a PACS auto-routes) arrives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.core.db import Study, StudyState, session_scope
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


def _ended(orthanc: Any, job: str) -> dict[str, Any] | None:
    found = orthanc.get(f"/jobs/{job}")
    return found if found["State"] in ("Success", "Failure") else None


def test_orthanc_does_not_retry_an_association_rejected_at_the_limit(
    node_factory: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    """What docs/sysadmin.md says about max_associations: Orthanc tries once and gives up (Orthanc 1.10)."""
    import requests
    from pynetdicom import AE

    node_port = free_port()
    orthanc = orthanc_factory(modalities={"laurel": ("LAUREL", "127.0.0.1", node_port)})
    node = node_factory(
        port=node_port,
        node={"max_associations": 1},
        peers=[
            {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port},
            {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104},
        ],
    )
    study = write_study(tmp_path / "study", series=2, instances=2)
    orthanc.upload(study.paths)
    study_id = orthanc.study_id(study.study_uid)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = ae.associate("127.0.0.1", node_port, ae_title="LAUREL")  # the node's only slot
    try:
        assert held.is_established
        with pytest.raises(requests.HTTPError):
            orthanc.store_to("laurel", [study_id])  # synchronous: HTTP 500
        jobs = [
            orthanc.post("/modalities/laurel/store", {"Resources": [study_id], "Synchronous": False, **extra})["ID"]
            for extra in ({}, {"Permissive": True})
        ]
        states = [wait_until(lambda job=job: _ended(orthanc, job), 30, 0.1, "the Orthanc job to end") for job in jobs]
        assert states[0]["State"] == "Failure"
        assert states[1]["State"] == "Success" and states[1]["Content"]["FailedInstancesCount"] == 0
    finally:
        held.release()
    with session_scope(node.engine) as session:
        assert session.scalars(select(Study)).all() == []  # nothing arrived, and nothing will: no retry
    orthanc.store_to("laurel", [study_id])  # a person (or a script) sends it again
    with session_scope(node.engine) as session:
        row = session.scalars(select(Study).where(Study.StudyInstanceUID == study.study_uid)).one()
        assert sum(len(s.instances) for s in row.series) == len(study.paths)
