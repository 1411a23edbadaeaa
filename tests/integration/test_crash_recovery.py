"""kill -9 of ``laurel serve`` during a transfer: nothing acknowledged is lost, and the study still completes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from dicom_node.core.db import Instance, Study, StudyState, session_scope
from dicom_node.intake.store import INCOMING_DIR
from tests.peers import NodeProcess, node_settings, store_raw, wait_until, write_study

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _indexed(engine: Any) -> dict[str, str]:
    with session_scope(engine) as session:
        return {i.SOPInstanceUID: i.path for i in session.scalars(select(Instance))}


def _study_state(engine: Any, study_uid: str) -> str | None:
    with session_scope(engine) as session:
        study = session.scalars(select(Study).where(Study.StudyInstanceUID == study_uid)).one_or_none()
        return None if study is None else study.state


def _completed(engine: Any, study_uid: str) -> bool:
    """The study reached COMPLETE (the workflow may have moved it on since: segment job)."""
    with session_scope(engine) as session:
        study = session.scalars(select(Study).where(Study.StudyInstanceUID == study_uid)).one_or_none()
        return study is not None and study.completed_at is not None and study.state != StudyState.RECEIVING


def test_kill_9_during_a_transfer_loses_nothing_acknowledged(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study", series=2, instances=40, rows=128, columns=128)
    settings = node_settings(tmp_path, routing=[{"model": "leg", "match": {"Modality": "MR"}}])
    settings["node"]["settle_seconds"] = 8.0  # long enough that the assertions after the restart see RECEIVING
    node = NodeProcess(tmp_path / "run", settings).start()
    acknowledged: list[Path] = []
    killed = threading.Event()

    def on_status(path: Path, status: int | None) -> None:
        if status == 0:
            acknowledged.append(path)
        if len(acknowledged) == 25 and not killed.is_set():
            killed.set()
            node.kill()  # SIGKILL while the sender is in the middle of the study

    try:
        # the association breaks when the node dies (that is the point); statuses after the kill are not 0
        statuses = store_raw(node.port, study.paths, on_status=on_status)
        assert statuses.count(0) == len(acknowledged)
        assert killed.is_set() and 25 <= len(acknowledged) < len(study.paths)
        node.start()  # same configuration, same storage
        engine = node.engine()
        indexed = _indexed(engine)
        sop_of = dict(zip(study.paths, study.sop_instance_uids, strict=True))
        for path in acknowledged:
            stored = node.storage_dir / indexed[sop_of[path]]
            assert dcmread(stored).SOPInstanceUID == sop_of[path]  # complete and readable
        assert not list((node.storage_dir / INCOMING_DIR).iterdir())  # no partial file survives
        assert _study_state(engine, study.study_uid) == StudyState.RECEIVING
        # the sender retries the whole study, as PACSs do; the acknowledged part is idempotent
        assert store_raw(node.port, study.paths) == [0] * len(study.paths)
        wait_until(lambda: _completed(engine, study.study_uid), 60, 0.2, "the study to complete")
        assert set(_indexed(engine)) == set(study.sop_instance_uids)
        engine.dispose()
    finally:
        node.stop()


def test_a_study_interrupted_by_a_crash_completes_after_restart(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study", series=1, instances=6)
    settings = node_settings(tmp_path, routing=[{"model": "leg", "match": {"Modality": "MR"}}])
    settings["node"]["settle_seconds"] = 30.0  # the node dies long before the study settles
    node = NodeProcess(tmp_path / "run", settings).start()
    try:
        assert store_raw(node.port, study.paths[:4]) == [0] * 4
        node.kill()
        settings["node"]["settle_seconds"] = 1.0
        restarted = NodeProcess(tmp_path / "run", settings).start()
        engine = restarted.engine()
        wait_until(lambda: _completed(engine, study.study_uid), 60, 0.2, "completion after restart")
        assert len(_indexed(engine)) == 4
        engine.dispose()
        restarted.stop()
    finally:
        node.stop()
