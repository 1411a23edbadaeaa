"""Write-back to a DICOMweb peer with STOW-RS: Orthanc's DICOMweb plugin stores what the outbox sends (read back
with WADO-RS, the approved SEG parsed by highdicom); wrong or missing credentials are dead letters that name
the problem and never the secret; a peer that is down is retried and gets each object once; a peer that
answers without end is read within bounds.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicom_node.core.db import Job, JobState, session_scope
from dicom_node.work.dicomweb import MAX_RESPONSE_BYTES
from dicom_node.work.export import enqueue_export
from tests.peers import OrthancProcess, orthanc_dicomweb_config, wait_until, write_study

pytestmark = pytest.mark.peers

FAST_JOBS = {"workers": 1, "poll_seconds": 0.05, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.3}
USER, PASSWORD = "laurel", "pw-4f1d9c2e-never-logged"


class AuthOrthanc(OrthancProcess):
    """Orthanc whose REST API (and DICOMweb) asks for HTTP basic credentials."""

    def get(self, path: str) -> Any:
        response = requests.get(self.url + path, timeout=30, auth=(USER, PASSWORD))
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None, *, data: bytes | None = None, timeout: float = 120) -> Any:
        response = requests.post(self.url + path, json=body, data=data, timeout=timeout, auth=(USER, PASSWORD))
        response.raise_for_status()
        return response.json() if response.content else None


@pytest.fixture
def auth_orthanc(tmp_path: Path) -> Iterator[AuthOrthanc]:
    """Orthanc with the DICOMweb plugin and one registered user; stopped by PID afterwards."""
    orthanc = AuthOrthanc(tmp_path / "web-pacs", extra_config=orthanc_dicomweb_config({USER: PASSWORD}))
    try:
        yield orthanc.start()  # type: ignore[misc]
    finally:
        orthanc.stop()


def web_peer(url: str, **auth: Any) -> dict[str, Any]:
    return {"name": "web", "type": "dicomweb", "url": f"{url}/dicom-web", "receive_results": True, **auth}


def _job(node: Any, job_id: int) -> Job:
    with session_scope(node.engine) as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def _export(node: Any, paths: list[Path]) -> int:
    with session_scope(node.engine) as session:
        job_id = enqueue_export(session, "web", [str(p) for p in paths], "STOW-RS write-back").id
    node.jobs.notify()
    return job_id


def wado_instance(base: str, study: str, series: str, instance: str, auth: Any = None) -> pydicom.Dataset:
    """WADO-RS retrieve of one instance (multipart/related; type="application/dicom"), parsed by pydicom."""
    from io import BytesIO

    url = f"{base}/studies/{study}/series/{series}/instances/{instance}"
    response = requests.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"'}, auth=auth, timeout=60
    )
    response.raise_for_status()
    content_type = response.headers["Content-Type"]
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary="))
    parts = [p for p in response.content.split(b"--" + boundary.encode()) if p.strip(b"\r\n-")]
    assert len(parts) == 1, f"expected one part, got {len(parts)}"
    _headers, body = parts[0].split(b"\r\n\r\n", 1)
    return pydicom.dcmread(BytesIO(body.removesuffix(b"\r\n")))


def test_stow_write_back_with_basic_auth_reads_back_with_wado_rs(
    node_factory: Any,
    auth_orthanc: AuthOrthanc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LAUREL_TEST_WEB_PASSWORD", PASSWORD)
    peer = web_peer(auth_orthanc.url, auth="basic", username=USER, password_env="LAUREL_TEST_WEB_PASSWORD")
    node = node_factory(peers=[peer], jobs=FAST_JOBS)
    study = write_study(tmp_path / "out", series=2, instances=3)
    with caplog.at_level(logging.DEBUG):
        job_id = _export(node, study.paths)
        wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "the STOW-RS export job")
    assert _job(node, job_id).result == {"peer": "web", "sent": sorted(study.sop_instance_uids), "count": 6}
    assert auth_orthanc.sop_instance_uids() == set(study.sop_instance_uids)
    first = pydicom.dcmread(study.paths[0])
    back = wado_instance(
        f"{auth_orthanc.url}/dicom-web",
        study.study_uid,
        str(first.SeriesInstanceUID),
        str(first.SOPInstanceUID),
        auth=(USER, PASSWORD),
    )
    assert back.PixelData == first.PixelData
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_refused_credentials_are_a_dead_letter_that_names_the_status_not_the_secret(
    node_factory: Any,
    auth_orthanc: AuthOrthanc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    auth: str,
) -> None:
    secret = "wrong-8d0f3a77-secret"
    monkeypatch.setenv("LAUREL_TEST_WEB_SECRET", secret)
    credentials = (
        {"auth": "bearer", "token_env": "LAUREL_TEST_WEB_SECRET"}
        if auth == "bearer"
        else {"auth": "basic", "username": USER, "password_env": "LAUREL_TEST_WEB_SECRET"}
    )
    node = node_factory(peers=[web_peer(auth_orthanc.url, **credentials)], jobs=FAST_JOBS)
    study = write_study(tmp_path / "out", series=1, instances=1)
    with caplog.at_level(logging.DEBUG):
        job_id = _export(node, study.paths)
        dead = wait_until(lambda: (j := _job(node, job_id)).state == JobState.DEAD and j, 60, 0.05, "a dead letter")
    assert dead.attempts == 1  # a 401 does not change by itself: no retries
    assert "HTTP 401" in str(dead.last_error) and "check the credentials" in str(dead.last_error)
    assert secret not in str(dead.last_error) and secret not in caplog.text
    assert auth_orthanc.instances() == []


def test_a_credential_variable_that_is_not_set_is_a_dead_letter_naming_it(
    node_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAUREL_TEST_UNSET_TOKEN", raising=False)
    peer = web_peer("http://127.0.0.1:9", auth="bearer", token_env="LAUREL_TEST_UNSET_TOKEN")
    node = node_factory(peers=[peer], jobs=FAST_JOBS)
    job_id = _export(node, write_study(tmp_path / "out", series=1, instances=1).paths)
    dead = wait_until(lambda: (j := _job(node, job_id)).state == JobState.DEAD and j, 60, 0.05, "a dead letter")
    assert "LAUREL_TEST_UNSET_TOKEN" in str(dead.last_error) and "is not set" in str(dead.last_error)


def test_a_dicomweb_peer_that_is_down_is_retried_and_gets_each_object_once(node_factory: Any, tmp_path: Path) -> None:
    orthanc = OrthancProcess(tmp_path / "web-pacs", extra_config=orthanc_dicomweb_config())  # not started yet
    node = node_factory(peers=[web_peer(orthanc.url)], jobs={**FAST_JOBS, "max_attempts": 100})
    study = write_study(tmp_path / "out", series=1, instances=3)
    job_id = _export(node, study.paths)
    try:
        waiting = wait_until(
            lambda: (j := _job(node, job_id)).attempts >= 2 and j.state == JobState.FAILED and j, 60, 0.05, "retries"
        )
        assert "not reachable" in str(waiting.last_error)
        orthanc.start()
        wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "delivery after Orthanc started")
        assert orthanc.sop_instance_uids() == set(study.sop_instance_uids)
        changes = orthanc.get("/changes?limit=1000")["Changes"]
        assert sum(1 for c in changes if c["ChangeType"] == "NewInstance") == 3
    finally:
        orthanc.stop()


class _EndlessAnswer(http.server.BaseHTTPRequestHandler):
    """A STOW-RS server that reads the request, then answers 409 with a body that never ends."""

    sent: list[int]
    done: threading.Event

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        while length > 0:
            length -= len(self.rfile.read(min(length, 1 << 16)))
        self.send_response(409)
        self.send_header("Content-Type", "application/dicom+json")
        self.end_headers()
        chunk = b"[" * (1 << 16)
        try:
            while True:
                self.wfile.write(chunk)
                self.sent.append(len(chunk))
        except OSError:
            self.done.set()  # the node hung up

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_an_endless_answer_is_read_within_bounds_and_retried(node_factory: Any, tmp_path: Path) -> None:
    sent: list[int] = []
    server_done = threading.Event()
    handler: Callable[..., Any] = type("Handler", (_EndlessAnswer,), {"sent": sent, "done": server_done})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        slow_retry = {**FAST_JOBS, "max_attempts": 100, "backoff_base_seconds": 60, "backoff_max_seconds": 60}
        node = node_factory(peers=[web_peer(url)], jobs=slow_retry)
        job_id = _export(node, write_study(tmp_path / "out", series=1, instances=1).paths)
        failed = wait_until(lambda: (j := _job(node, job_id)).last_error and j, 60, 0.05, "the first attempt to end")
        assert failed.attempts == 1 and failed.state == JobState.FAILED  # to be retried (in a minute)
        assert "answered HTTP 409 without confirming" in str(failed.last_error)
        # The node stopped reading after MAX_RESPONSE_BYTES and hung up: the server pushed little more than
        # that plus what the sockets' buffers hold (unbounded, it would have streamed for timeout_seconds).
        wait_until(lambda: server_done.is_set(), 30, 0.05, "the server to notice the node hung up")
        assert sum(sent) < 16 * MAX_RESPONSE_BYTES
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_the_approved_seg_is_stowed_and_read_back_by_highdicom(
    workflow_node_factory: Callable[..., Any], orthanc_factory: Any, tmp_path: Path
) -> None:
    import highdicom as hd
    import numpy as np
    from sqlalchemy import select

    from tests.workflow_fixtures import phantom_series, send_files

    orthanc = orthanc_factory(extra_config=orthanc_dicomweb_config())  # UnknownSopClassAccepted: LABELMAP
    sender = {"name": "modality", "ae_title": "STORESCU", "host": "127.0.0.1", "port": 104}
    running = workflow_node_factory(
        peers=[sender, web_peer(orthanc.url)], segmentation={"seg_type": "LABELMAP"}, jobs=FAST_JOBS
    )
    files, _phantom = phantom_series(tmp_path / "phantom", 7373, n_slices=6)
    send_files(running.node.port, files)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    study = running.wait_state(study_uid, {"PENDING_REVIEW"})
    assert running.approve(study["id"], study_uid).status_code == 200

    def export_job() -> Job | None:
        with session_scope(running.node.engine) as s:
            job = s.scalars(select(Job).where(Job.kind == "export")).one_or_none()
            return job if job is not None and job.state == JobState.DONE else None

    job = wait_until(export_job, 120, 0.1, "the STOW-RS export of the approved SEG")
    (seg_path,) = [running.node.config.node.storage_dir / p for p in job.payload["paths"]]
    approved = pydicom.dcmread(seg_path)
    assert job.result["sent"] == [str(approved.SOPInstanceUID)]
    back = wado_instance(
        f"{orthanc.url}/dicom-web", study_uid, str(approved.SeriesInstanceUID), str(approved.SOPInstanceUID)
    )
    seg = hd.seg.Segmentation.from_dataset(back)
    ours = hd.seg.Segmentation.from_dataset(approved)
    assert seg.segmentation_type == ours.segmentation_type == hd.seg.SegmentationTypeValues.LABELMAP
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [s.SegmentLabel for s in ours.SegmentSequence]
    assert np.array_equal(seg.pixel_array, ours.pixel_array)


def test_laurel_send_stows_to_a_dicomweb_peer_and_echo_says_it_is_not_dimse(
    orthanc_factory: Any, tmp_path: Path
) -> None:
    import subprocess
    import sys

    import yaml

    from tests.peers import PEER_ENV, REPO, node_settings

    orthanc = orthanc_factory(extra_config=orthanc_dicomweb_config())
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(node_settings(tmp_path, peers=[web_peer(orthanc.url)])))
    study = write_study(tmp_path / "out", series=1, instances=2)

    def laurel(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "dicom_node", *args, "--config", str(config)]
        env = {**PEER_ENV, "PYTHONPATH": str(REPO)}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)

    sent = laurel("send", "web", *map(str, study.paths))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.count("status 0x0000") == 2
    assert orthanc.sop_instance_uids() == set(study.sop_instance_uids)
    echoed = laurel("echo", "web")
    assert echoed.returncode == 2 and "is a DICOMweb peer" in echoed.stderr
