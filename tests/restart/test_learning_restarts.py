"""A deferred learning step (the reference set still filling) killed between keeping the approved series and
finishing its job: after the restart the job ends once, the series is kept once and no model changed.

A real ``laurel serve`` with the guard on (its default ``defer`` fallback), SIGKILL at the named fault point
``learn.after_keep``. SYNTHETIC phantom study.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from dicom_node.core.db import Job, Study, session_scope
from dicom_node.core.model_tables import ModelRevision, SiteCaseRecord
from tests.peers import free_port, node_settings, wait_until
from tests.restart.harness import NodeServer
from tests.workflow_fixtures import phantom_series, send_files

pytestmark = [pytest.mark.peers, pytest.mark.slow, pytest.mark.timeout(900)]


def _learn_jobs(engine: Any) -> list[tuple[str, dict[str, Any] | None]]:
    with session_scope(engine) as s:
        return [(j.state, j.result) for j in s.scalars(select(Job).where(Job.kind == "learn"))]


def test_a_deferred_step_killed_after_keeping_the_series_keeps_it_once(tmp_path: Path) -> None:
    settings = node_settings(tmp_path / "node", routing=[{"model": "leg", "match": {"SeriesDescription": "(?i)leg"}}])
    settings["learning"] = {"guard": True}  # the default fallback: defer
    settings["api"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    node = NodeServer(tmp_path / "run", settings)
    files, _ph = phantom_series(tmp_path / "study", 7373, n_slices=6)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    try:
        node.start(hold=["learn.after_keep"])
        engine = node.engine()
        send_files(node.port, files)

        def pending() -> int | None:
            with session_scope(engine) as s:
                study = s.scalar(select(Study).where(Study.StudyInstanceUID == uid))
                return study.id if study is not None and study.state == "PENDING_REVIEW" else None

        study_id = wait_until(pending, 240, 0.2, "the draft")
        approved = node.api("POST", f"/api/v1/studies/{study_id}/approve", json={"StudyInstanceUID": uid})
        assert approved.status_code == 200, approved.text
        node.wait_point("learn.after_keep")  # the series is kept as a reference case; the job is not done
        with session_scope(engine) as s:
            assert len(s.scalars(select(SiteCaseRecord)).all()) == 1
        node.stop_with(signal.SIGKILL)

        node.start()
        wait_until(lambda: [state for state, _ in _learn_jobs(engine)] == ["DONE"], 240, 0.2, "the learn job")
        ((_state, result),) = _learn_jobs(engine)
        assert result is not None and result["kept_as"] == "reference" and result["slices"] == 0
        assert result["deferred"] == "kept before (deferred step)"  # the re-run saw the kept series, learned nothing
        with session_scope(engine) as s:
            cases = s.scalars(select(SiteCaseRecord)).all()
            assert [(c.role, c.source_key) for c in cases] == [("reference", cases[0].source_key)]
            local = s.scalars(select(ModelRevision).where(ModelRevision.source == "local")).all()
            assert local == []  # no model changed, before or after the kill
    finally:
        node.stop()
