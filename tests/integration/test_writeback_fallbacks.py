"""Write-back that finds a way: a PACS that takes only implicit VR, one that refuses LABELMAP SEGs, one that
is down for longer than the old retry budget, and a configuration change applied to a job already queued.
Real node (in process) with real drafts of SYNTHETIC phantom studies; DCMTK storescp and Orthanc as PACSs."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicom_node.core.db import Job, session_scope
from tests.peers import dciodvfy, free_port, wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, results_peer, send_files

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
IMPLICIT = "1.2.840.10008.1.2"
FAST_JOBS = {"workers": 2, "poll_seconds": 0.05, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.3}


SENDER = {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}


def _approved_study(running: RunningNode, tmp_path: Path, seed: int) -> dict[str, Any]:
    files, _ph = phantom_series(tmp_path / f"p{seed}", seed, n_slices=6)
    send_files(running.node.port, files)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    study = running.wait_state(uid, {"PENDING_REVIEW"})
    r = running.approve(study["id"], uid)
    assert r.status_code == 200, r.text
    return study


def _export_jobs(running: RunningNode) -> dict[str, Job]:
    with session_scope(running.node.engine) as s:
        from sqlalchemy import select

        return {str(j.payload["peer"]): j for j in s.scalars(select(Job).where(Job.kind == "export"))}


def test_the_seg_reaches_pacs_that_refuse_its_syntax_or_labelmap_or_are_down(
    workflow_node_factory: Callable[..., RunningNode],
    storescp_factory: Any,
    orthanc_factory: Any,
    tmp_path: Path,
) -> None:
    implicit_only = storescp_factory(aet="IMPLICIT").start(extra=("+uf", "+xi"))  # accepts implicit VR only
    no_labelmap = orthanc_factory(aet="NOLABELMAP", extra_config={"UnknownSopClassAccepted": False})
    late = storescp_factory(aet="LATE", port=free_port())  # down until later
    running = workflow_node_factory(
        peers=[
            SENDER,
            results_peer("implicit", "IMPLICIT", implicit_only.port),
            results_peer("nolabelmap", "NOLABELMAP", no_labelmap.dicom_port),
            results_peer("late", "LATE", late.port),
        ],
        segmentation={"seg_type": "LABELMAP"},
        jobs={**FAST_JOBS, "max_attempts": 3},
    )
    _approved_study(running, tmp_path, 7171)

    # storescp +xi: refuses LABELMAP (DCMTK 3.6.7 does not know it) and explicit VR; gets BINARY, implicit VR.
    wait_until(lambda: implicit_only.files(), 120, 0.2, "the SEG at the implicit-only PACS")
    (received,) = implicit_only.files()
    ds = pydicom.dcmread(received)
    assert ds.SOPClassUID == SEGMENTATION and ds.file_meta.TransferSyntaxUID == IMPLICIT
    assert [line for line in dciodvfy(received) if "Error" in line] == []
    # Orthanc without UnknownSopClassAccepted: refuses LABELMAP; gets BINARY.
    wait_until(lambda: no_labelmap.instances(), 120, 0.2, "the SEG in Orthanc")
    (orthanc_id,) = no_labelmap.instances()
    assert no_labelmap.get(f"/instances/{orthanc_id}/tags?simplify")["SOPClassUID"] == SEGMENTATION
    # The PACS that is down: retried past jobs.max_attempts (the old dead-letter limit), never a dead letter
    # within jobs.export_retry_hours; it gets the SEG when it comes back.
    wait_until(lambda: _export_jobs(running)["late"].attempts > 6, 120, 0.1, "retries beyond max_attempts")
    assert _export_jobs(running)["late"].state in ("FAILED", "QUEUED", "RUNNING")
    with socket.socket() as probe:  # still down
        assert probe.connect_ex(("127.0.0.1", late.port)) != 0
    late.start()
    wait_until(lambda: late.files(), 120, 0.2, "the SEG at the PACS that came back")
    wait_until(lambda: _export_jobs(running)["late"].state == "DONE", 60, 0.1, "the late export job")
    assert len(late.files()) == 1
    sop_uids = {pydicom.dcmread(p).SOPInstanceUID for p in (received, *late.files())}
    assert len(sop_uids) == 1  # the rebuilt BINARY SEG is one object, the same for every peer


def test_a_configuration_change_applies_to_a_requeued_write_back(
    workflow_node_factory: Callable[..., RunningNode], storescp_factory: Any, tmp_path: Path
) -> None:
    archive = storescp_factory(aet="ARCHIVE").start()
    peers = [SENDER, results_peer("archive", "ARCHIVE", archive.port)]
    running = workflow_node_factory(
        peers=peers, segmentation={"seg_type": "LABELMAP", "labelmap_fallback": False}, jobs=FAST_JOBS
    )
    _approved_study(running, tmp_path, 7272)
    wait_until(lambda: _export_jobs(running)["archive"].state == "DEAD", 120, 0.1, "the dead letter")
    error = str(_export_jobs(running)["archive"].last_error)
    assert "Label Map Segmentation Storage" in error and "Explicit VR Little Endian" in error
    assert archive.files() == []
    # The sysadmin switches to BINARY and restarts the node, then requeues the dead letter: the SEG is
    # rebuilt from the approval, not the stale LABELMAP file resent.
    from dicom_node.core.config import NodeConfig
    from dicom_node.process.node import build_node

    running.node.stop()
    settings = running.node.config.model_dump()
    settings["segmentation"]["seg_type"] = "BINARY"
    node = build_node(NodeConfig.load(None, **settings))
    node.start()
    try:
        again = RunningNode(node, running.url, running.token, running.workdir)
        job_id = _export_jobs(again)["archive"].id
        r = requests.post(f"{again.url}/api/v1/dead-letters/{job_id}/requeue", headers=again.headers, timeout=30)
        assert r.status_code == 200, r.text
        wait_until(lambda: archive.files(), 120, 0.2, "the BINARY SEG")
        assert pydicom.dcmread(archive.files()[0]).SOPClassUID == SEGMENTATION
    finally:
        node.stop()
