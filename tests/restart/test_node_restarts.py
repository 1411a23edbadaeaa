"""A study's whole journey through a real node that is stopped (SIGTERM or SIGKILL) in every state.

The node (``laurel serve``: SCP, jobs, API), Orthanc as the PACS and the federation server run as real
processes. At each state the node is stopped at a named fault point (:mod:`models.faults`) and started
again; the end state must be what an uninterrupted run gives: one draft per series, the saved corrections,
one SEG in the PACS, one local revision for the approval, one update on the server merged once, one
revision per pulled federation version, and a study sent after the restarts reaches PENDING_REVIEW. Half-way
the storage folder is moved (a backup restored at another path). All images are SYNTHETIC phantoms.
"""

from __future__ import annotations

import io
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import func, select

from dicom_node.core.db import Job, Series, Study, session_scope
from dicom_node.core.model_tables import ModelRevision
from dicom_node.core.review_tables import SeriesResult
from tests.peers import OrthancProcess, free_port, node_settings, store_raw, wait_until
from tests.restart.harness import FederationServer, NodeServer
from tests.workflow_fixtures import phantom_series, send_files

# The journey restarts a real node eight times; on a loaded 2-core machine it can pass 10 minutes.
pytestmark = [pytest.mark.peers, pytest.mark.slow, pytest.mark.timeout(1800)]


def _study(engine: Any, uid: str) -> dict[str, Any] | None:
    with session_scope(engine) as s:
        study = s.scalar(select(Study).where(Study.StudyInstanceUID == uid))
        if study is None:
            return None
        series = [(se.id, se.state, len(se.instances)) for se in study.series]
        results = s.scalar(
            select(func.count())
            .select_from(SeriesResult)
            .join(Series, Series.id == SeriesResult.series_id)
            .where(Series.study_id == study.id)
        )
        return {"id": study.id, "state": study.state, "series": series, "results": results}


def _revisions(engine: Any, source: str) -> list[tuple[int, str | None]]:
    with session_scope(engine) as s:
        rows = s.scalars(select(ModelRevision).where(ModelRevision.name == "leg", ModelRevision.source == source)).all()
        return [(r.revision, r.source_key) for r in rows]


def _jobs(engine: Any, kind: str) -> list[str]:
    with session_scope(engine) as s:
        return [j.state for j in s.scalars(select(Job).where(Job.kind == kind))]


def _segs_in_pacs(orthanc: OrthancProcess, study_uid: str) -> int:
    found = orthanc.post("/tools/lookup", data=study_uid.encode())
    studies = [f["ID"] for f in found if f["Type"] == "Study"]
    if not studies:
        return 0
    return sum(
        len(series["Instances"])
        for series in orthanc.get(f"/studies/{studies[0]}/series")
        if series["MainDicomTags"].get("Modality") == "SEG"
    )


def _files_deleted(engine: Any, uid: str) -> bool:
    with session_scope(engine) as s:
        study = s.scalar(select(Study).where(Study.StudyInstanceUID == uid))
        return study is not None and study.files_deleted_at is not None


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("sig", "backend"),
    [(signal.SIGTERM, "sqlite"), (signal.SIGKILL, "sqlite")],
    ids=["SIGTERM", "SIGKILL"],
)
def test_a_study_survives_a_stop_in_every_state(
    sig: signal.Signals,
    backend: str,
    tmp_path: Path,
    restart_reference: Path,
    orthanc_factory: Any,
    request: pytest.FixtureRequest,
) -> None:
    fed = FederationServer(tmp_path / "fed", restart_reference, threshold=0.0).start()
    site_key = fed.add_site("hospital-a")
    settings = node_settings(
        tmp_path / "node",
        routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}],
    )
    if backend == "postgresql":
        settings["node"]["database_url"] = request.getfixturevalue("postgres_server").create_database()
    orthanc = orthanc_factory(modalities={"laurel": ("LAUREL", "127.0.0.1", settings["node"]["port"])})
    settings["peers"].append(
        {
            "name": "pacs",
            "ae_title": "ORTHANC",
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "send_to_us": True,
            "receive_results": True,
        }
    )
    settings["node"]["settle_seconds"] = 3.0
    settings["api"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    settings["federation"] = {
        "url": fed.url,
        "server_public_key": fed.public_key,
        "sync_interval_seconds": 2,
    }
    node = NodeServer(tmp_path / "run", settings, env={"LAUREL_FEDERATION_KEY": site_key})
    files, phantom = phantom_series(tmp_path / "study-a", 4242, n_slices=6)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    tried: list[str] = []
    try:
        # RECEIVING: the node stops with half the study; the PACS sends the whole study again afterwards.
        node.start()
        assert store_raw(node.port, files[:3]) == [0, 0, 0]
        node.stop_with(sig)
        engine = node.engine()
        assert (st := _study(engine, study_uid)) is not None and st["state"] == "RECEIVING"
        tried.append("RECEIVING")
        # COMPLETE: the segment job is claimed, the study not yet SEGMENTING.
        node.start(hold=["segment.start"])
        send_files(node.port, files)
        node.wait_point("segment.start")
        assert _study(engine, study_uid)["state"] == "COMPLETE"  # type: ignore[index]
        node.stop_with(sig)
        tried.append("COMPLETE")
        # SEGMENTING: the draft files are written, their row is not.
        node.start(hold=["segment.after_drafts"])
        node.wait_point("segment.after_drafts")
        st = _study(engine, study_uid)
        assert st is not None and st["state"] == "SEGMENTING" and st["results"] == 0
        node.stop_with(sig)
        tried.append("SEGMENTING")
        node.start()
        wait_until(lambda: _study(engine, study_uid)["state"] == "PENDING_REVIEW", 180, 0.2, "the draft")  # type: ignore[index]
        st = _study(engine, study_uid)
        assert st is not None and st["results"] == 1 and st["series"][0][2] == len(files)
        series_id = st["series"][0][0]
        draft = np.load(io.BytesIO(node.api("GET", f"/api/v1/series/{series_id}/labels").content))
        assert draft.shape == phantom.labels.shape
        # PENDING_REVIEW with saved corrections: the operator's labels are stored, then the node stops, and
        # its storage folder is restored at another path.
        correction = phantom.labels.astype(np.uint8)
        series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        put = node.api(
            "PUT", f"/api/v1/series/{series_id}/labels", data=_npy(correction), params={"SeriesInstanceUID": series_uid}
        )
        assert put.ok, put.text
        node.stop_with(sig)
        engine.dispose()
        moved = tmp_path / "restored" / "node"
        shutil.move(str(node.storage_dir), moved)
        node.settings["node"]["storage_dir"] = str(moved)
        node.write_config()
        engine = node.engine()
        node.start(hold=["export.after_send"])
        assert node.api("GET", f"/api/v1/series/{series_id}/segments").status_code == 200
        corrected = node.api("GET", f"/api/v1/series/{series_id}/labels", params={"version": "corrected"})
        assert np.array_equal(np.load(io.BytesIO(corrected.content)), correction)
        assert _study(engine, study_uid)["state"] == "PENDING_REVIEW"  # type: ignore[index]
        tried.append("PENDING_REVIEW with saved corrections, storage moved")
        # APPROVED, export pending: the PACS answered Success, the node stops before noting it.
        study_id = st["id"]
        approved = node.api(
            "POST",
            f"/api/v1/studies/{study_id}/approve",
            json={"comment": "restart test", "StudyInstanceUID": study_uid},
        )
        assert approved.status_code == 200, approved.text
        node.wait_point("export.after_send")
        assert _segs_in_pacs(orthanc, study_uid) == 1
        node.stop_with(sig)
        tried.append("APPROVED with export pending")
        # learning: the revision is recorded, the job not yet done (a re-run must not learn it twice).
        node.start(hold=["learn.after_record"])
        node.wait_point("learn.after_record")
        assert len(_revisions(engine, "local")) == 1
        node.stop_with(sig)
        tried.append("learning")
        # uploading: the server queued the update, the node stops before noting it.
        node.start(hold=["upload.after_send"])
        node.wait_point("upload.after_send")
        assert len(_revisions(engine, "local")) == 1
        node.stop_with(sig)
        tried.append("uploading")
        # syncing: the server merged the update; the node downloaded the new version, not yet recorded.
        node.start(hold=["sync.before_record"])
        node.wait_point("sync.before_record")
        node.stop_with(sig)
        tried.append("syncing")
        node.start()
        wait_until(lambda: _revisions(engine, "federation"), 120, 0.2, "the pulled federation version")
        wait_until(lambda: _study(engine, study_uid)["state"] == "EXPORTED", 60, 0.2, "EXPORTED")  # type: ignore[index]
        # retention: the finished study's received files are deleted, the rows not yet marked.
        node.stop_with(signal.SIGTERM)
        node.settings["retention"] = {"finished_study_days": 0, "scan_interval_seconds": 1}
        node.write_config()
        node.start(hold=["retention.after_delete"])
        node.wait_point("retention.after_delete")
        node.stop_with(sig)
        tried.append("retention")
        node.start()
        wait_until(lambda: _files_deleted(engine, study_uid), 60, 0.2, "retention to finish")
        assert not list((moved / "instances").rglob("*.dcm"))
        assert node.api("GET", f"/api/v1/series/{series_id}/labels").ok  # results are not received files
        # A study sent after all the restarts gets its draft.
        files_b, _ = phantom_series(tmp_path / "study-b", 4343, n_slices=6)
        uid_b = str(pydicom.dcmread(files_b[0], stop_before_pixels=True).StudyInstanceUID)
        send_files(node.port, files_b)
        wait_until(lambda: (s := _study(engine, uid_b)) and s["state"] == "PENDING_REVIEW", 180, 0.2, "study B")
        series_b = _study(engine, uid_b)["series"][0][0]  # type: ignore[index]
        assert node.api("GET", f"/api/v1/series/{series_b}/segments").status_code == 200

        # The end state of an uninterrupted run.
        segs = _segs_in_pacs(orthanc, study_uid)
        local = _revisions(engine, "local")
        pulled = _revisions(engine, "federation")
        client = fed.client(site_key)
        updates = client.list_updates("leg")
        merged = [u for v in client.model_info("leg")["versions"] for u in v["merged_updates"]]
        assert segs == 1
        assert len(local) == 1 and str(local[0][1]).startswith("approval:")
        assert len(updates) == 1 and updates[0]["state"] == "ACCEPTED"
        assert merged == [updates[0]["update_id"]]
        assert [key for _rev, key in pulled] == [f"federation:{updates[0]['version']}"]
        assert _jobs(engine, "export") == ["DONE"] and _jobs(engine, "learn") == ["DONE"]
        assert _jobs(engine, "upload") == ["DONE"]
        print(
            f"{sig.name}: stopped in {'; '.join(tried)} -> SEGs in Orthanc {segs}, local revisions {len(local)}, "
            f"updates on the server {len(updates)}, merges {len(merged)}, pulled revisions {len(pulled)}"
        )
        engine.dispose()
    finally:
        node.stop()
        fed.stop()
