"""Two approvals learned at the same time by two job workers: two revisions in a chain, never two siblings.

0.1 let both learning jobs start from revision 1, and the later one silently replaced the earlier. Now the
model's lease makes them take turns, and each starts from the newest revision. SYNTHETIC phantom studies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.peers import wait_until
from tests.workflow_fixtures import RunningNode, phantom_series, send_files

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_two_approvals_learned_concurrently_make_a_chain(
    workflow_node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    running = workflow_node_factory(jobs={"workers": 2, "poll_seconds": 0.05, "backoff_base_seconds": 0.1})
    studies: dict[int, str] = {}
    for seed in (5151, 5252):
        files, _ph = phantom_series(tmp_path / f"p{seed}", seed, n_slices=6)
        send_files(running.node.port, files)
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        studies[int(running.wait_state(uid, {"PENDING_REVIEW"})["id"])] = uid
    study_ids = list(studies)
    for study_id, uid in studies.items():  # approved one right after the other: both learn jobs are due at once
        r = running.approve(study_id, uid)
        assert r.status_code == 200, r.text

    def learned() -> list[dict[str, object]] | None:
        revs = running.get("/api/v1/models/leg").json()["revisions"]
        local = [r for r in revs if r["source"] == "local"]
        return local if len(local) == 2 else None

    local = wait_until(learned, 300, 0.5, "both approvals to be learned")
    learn_jobs = running.get("/api/v1/jobs", params={"kind": "learn"}).json()["jobs"]
    assert {j["state"] for j in learn_jobs} == {"DONE"}
    # they did run at the same time: one waited for the other's lease
    assert any(str(j["last_error"]).startswith("deferred: model leg is being changed") for j in learn_jobs)
    first, second = sorted(local, key=lambda r: int(r["revision"]))  # type: ignore[arg-type]
    assert first["parent_revision"] == 1  # the zoo revision
    assert second["parent_revision"] == first["revision"]  # the second learned on top of the first
    assert {first["source_key"], second["source_key"]} == {f"approval:{uid}" for uid in _approvals(running, study_ids)}
    assert running.get("/api/v1/models/leg").json()["active_revision"] == second["revision"]


def _approvals(running: RunningNode, study_ids: list[int]) -> set[str]:
    """The approved SEGs' SOP Instance UIDs (each approval's identity)."""
    from sqlalchemy import select

    from dicom_node.core.db import Series, session_scope
    from dicom_node.core.review_tables import SeriesResult

    with session_scope(running.node.engine) as s:
        rows = s.scalars(
            select(SeriesResult.approved_seg_sop_uid)
            .join(Series, Series.id == SeriesResult.series_id)
            .where(Series.study_id.in_(study_ids))
        )
        return {str(u) for u in rows}
