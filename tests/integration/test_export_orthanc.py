"""Node → PACS write-back: verified through Orthanc's REST API; queued while the PACS is down; exactly once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.uid import ImplicitVRLittleEndian

from dicom_node.core.config import Peer
from dicom_node.core.db import Job, JobState, session_scope
from dicom_node.intake.scp import VERIFICATION
from dicom_node.work.export import associate, enqueue_export
from tests.peers import PEER_ENV, REPO, OrthancProcess, wait_until, write_study

pytestmark = pytest.mark.peers


def _job(node: Any, job_id: int) -> Job:
    with session_scope(node.engine) as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def _export(node: Any, peer: str, paths: list[Path]) -> int:
    with session_scope(node.engine) as session:
        job_id = enqueue_export(session, peer, [str(p) for p in paths], "test write-back").id
    node.jobs.notify()
    return job_id


def _peer(name: str, aet: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "ae_title": aet,
        "host": "127.0.0.1",
        "port": port,
        "send_to_us": False,
        "receive_results": True,
    }


def _laurel(node: Any, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the in-process node's configuration (written to a file)."""
    config = tmp_path / "cli-node.yaml"
    config.write_text(yaml.safe_dump(json.loads(node.config.model_dump_json())))
    env = {**PEER_ENV, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "dicom_node", *args, "--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)


def test_write_back_to_orthanc_is_verified_through_rest(
    node_factory: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    orthanc = orthanc_factory()
    node = node_factory(peers=[_peer("pacs", "ORTHANC", orthanc.dicom_port)])
    study = write_study(tmp_path / "out", series=2, instances=2)
    job_id = _export(node, "pacs", study.paths)
    wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "the export job")
    assert orthanc.sop_instance_uids() == set(study.sop_instance_uids)
    assert _job(node, job_id).result == {"peer": "pacs", "sent": sorted(study.sop_instance_uids), "count": 4}
    assert _export(node, "pacs", study.paths) == job_id  # the same outbox is not queued twice


def test_write_back_waits_for_orthanc_and_delivers_once(node_factory: Any, tmp_path: Path) -> None:
    orthanc = OrthancProcess(tmp_path / "pacs")  # configured, not started: the PACS is down
    node = node_factory(
        peers=[_peer("pacs", "ORTHANC", orthanc.dicom_port)],
        jobs={
            "workers": 1,
            "poll_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.3,
            "max_attempts": 100,
        },
    )
    study = write_study(tmp_path / "out", series=1, instances=3)
    job_id = _export(node, "pacs", study.paths)
    try:
        waiting = wait_until(
            lambda: (j := _job(node, job_id)).attempts >= 3 and j.state == JobState.FAILED and j, 60, 0.05, "retries"
        )
        assert "not reachable" in (waiting.last_error or "")
        orthanc.start()
        wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "delivery after Orthanc started")
        assert orthanc.sop_instance_uids() == set(study.sop_instance_uids)
        changes = orthanc.get("/changes?limit=1000")["Changes"]
        assert sum(1 for c in changes if c["ChangeType"] == "NewInstance") == 3
    finally:
        orthanc.stop()


def test_each_object_is_delivered_exactly_once_across_retries(
    node_factory: Any, storescp_factory: Any, tmp_path: Path
) -> None:
    archive = storescp_factory(aet="ARCHIVE")  # +uf: every received copy becomes a new file
    node = node_factory(
        peers=[_peer("archive", "ARCHIVE", archive.port)],
        jobs={
            "workers": 1,
            "poll_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 0.3,
            "max_attempts": 100,
        },
    )
    study = write_study(tmp_path / "out", series=1, instances=5)
    job_id = _export(node, "archive", study.paths)
    wait_until(lambda: _job(node, job_id).attempts >= 2, 60, 0.05, "a failed attempt")
    archive.start()
    wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "delivery")
    assert len(archive.files()) == 5


def test_dead_letters_are_listed_and_requeued_from_the_cli(
    node_factory: Any, storescp_factory: Any, tmp_path: Path
) -> None:
    archive = storescp_factory(aet="ARCHIVE")
    node = node_factory(
        peers=[_peer("archive", "ARCHIVE", archive.port)],
        jobs={
            "workers": 1,
            "poll_seconds": 0.05,
            "backoff_base_seconds": 0.05,
            "backoff_max_seconds": 0.1,
            "max_attempts": 2,
            "export_retry_hours": 0.001,  # a write-back retries for a time, not a number of attempts
        },
    )
    study = write_study(tmp_path / "out", series=1, instances=2)
    job_id = _export(node, "archive", study.paths)
    wait_until(lambda: _job(node, job_id).state == JobState.DEAD, 60, 0.05, "a dead letter")
    dead = _job(node, job_id)
    assert dead.attempts > 2 and "gave up after 0.001 h of retries" in str(dead.last_error)
    status = _laurel(node, tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert [d["id"] for d in report["dead_letters"]] == [job_id]
    assert report["jobs"]["export"] == {"DEAD": 1}
    archive.start()
    requeued = _laurel(node, tmp_path, "requeue", str(job_id))
    assert requeued.returncode == 0 and f"job {job_id} (export) queued again" in requeued.stdout
    node.jobs.notify()
    wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "the requeued job")
    assert len(archive.files()) == 2
    again = _laurel(node, tmp_path, "requeue", str(job_id))
    assert again.returncode == 1 and "only DEAD or FAILED" in again.stderr


def test_unknown_peer_is_a_dead_letter_at_once(node: Any, tmp_path: Path) -> None:
    study = write_study(tmp_path / "out", series=1, instances=1)
    job_id = _export(node, "nowhere", study.paths)
    wait_until(lambda: _job(node, job_id).state == JobState.DEAD, 30, 0.05, "a dead letter")
    assert "no peer named 'nowhere'" in (_job(node, job_id).last_error or "")


def test_outgoing_associations_have_tcp_nodelay(storescp_factory: Any) -> None:
    archive = storescp_factory(aet="ARCHIVE").start()
    peer = Peer(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=archive.port)
    assoc = associate("LAUREL", peer, [(VERIFICATION, [ImplicitVRLittleEndian])])
    try:
        assert assoc.is_established
        assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


def test_echo_and_send_commands(node_factory: Any, orthanc_factory: Any, tmp_path: Path) -> None:
    orthanc = orthanc_factory()
    node = node_factory(peers=[_peer("pacs", "ORTHANC", orthanc.dicom_port)], start=False)
    echo = _laurel(node, tmp_path, "echo", "pacs")
    assert echo.returncode == 0 and "status 0x0000" in echo.stdout, echo.stderr
    study = write_study(tmp_path / "out", series=1, instances=2)
    sent = _laurel(node, tmp_path, "send", "pacs", *map(str, study.paths))
    assert sent.returncode == 0 and sent.stdout.count("status 0x0000") == 2, sent.stderr
    assert orthanc.sop_instance_uids() == set(study.sop_instance_uids)
    unknown = _laurel(node, tmp_path, "echo", "nobody")
    assert unknown.returncode == 2 and "no peer named 'nobody'" in unknown.stderr
    orthanc.stop()
    down = _laurel(node, tmp_path, "echo", "pacs")
    assert down.returncode == 1 and "not reachable" in down.stderr
