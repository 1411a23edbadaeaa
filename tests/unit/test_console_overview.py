"""The console overview's numbers, counted in the database on each backend: instances per 5-minute bucket,
unfinished jobs at each mark, studies by state, the queue and the last errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

from dicom_node.api.console.overview import BUCKET, WINDOW, overview
from dicom_node.core.db import Instance, Job, Series, Study, session_scope, utcnow
from dicom_node.core.engine import make_engine


def test_overview_counts_each_bucket_and_state(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    now = utcnow().replace(microsecond=0)
    # Instances: 3 in the newest bucket, 5 in the bucket one hour back, 2 before the window (not counted).
    ages = [timedelta(seconds=s) for s in (10, 60, 200)]
    ages += [timedelta(hours=1, seconds=s) for s in (10, 20, 30, 40, 50)]
    ages += [WINDOW + timedelta(minutes=1), WINDOW + timedelta(hours=2)]
    with engine.begin() as c:
        c.execute(
            insert(Study),
            [
                {"id": 1, "StudyInstanceUID": "1.2.1", "state": "PENDING_REVIEW", "failure_reason": None},
                {"id": 2, "StudyInstanceUID": "1.2.2", "state": "FAILED", "failure_reason": "no model for leg"},
            ],
        )
        c.execute(insert(Series), [{"id": 1, "study_id": 1, "SeriesInstanceUID": "1.2.1.1"}])
        c.execute(
            insert(Instance),
            [
                {
                    "series_id": 1,
                    "SOPInstanceUID": f"1.2.1.1.{i}",
                    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
                    "TransferSyntaxUID": "1.2.840.10008.1.2.1",
                    "path": f"i{i}.dcm",
                    "size": 1000,
                    "received_at": now - age,
                }
                for i, age in enumerate(ages)
            ],
        )
        job = {"payload": {}, "last_error": None, "finished_at": None}  # executemany: every row the same keys
        c.execute(
            insert(Job),
            [
                # queued 12 minutes ago and still waiting: open at the last two marks and now
                {**job, "kind": "export", "state": "QUEUED", "created_at": now - timedelta(minutes=12)},
                # ran from 2 h ago for 30 min: open at the marks in between only
                {
                    **job,
                    "kind": "segment",
                    "state": "DONE",
                    "created_at": now - timedelta(hours=2),
                    "finished_at": now - timedelta(hours=1, minutes=30),
                },
                # a dead letter from before the window
                {
                    **job,
                    "kind": "learn",
                    "state": "DEAD",
                    "last_error": "out of memory",
                    "created_at": now - timedelta(hours=8),
                    "finished_at": now - timedelta(hours=7),
                },
            ],
        )
    with session_scope(engine) as s:
        data = overview(s, tmp_path, now=now)
    engine.dispose()

    counts = [round(rate * BUCKET.total_seconds() / 60) for _, rate in data.intake]
    assert len(counts) == WINDOW // BUCKET and sum(counts) == 8
    assert counts[-1] == 3
    hour_back = [
        i
        for i, (end, _) in enumerate(data.intake)
        if end - BUCKET < now - timedelta(hours=1) + timedelta(seconds=1) <= end
    ]
    assert counts[hour_back[0]] + counts[hour_back[0] - 1] == 5
    assert data.received_last_hour == 3

    export = [y for _, y in data.queue_depth["export"]]
    assert export[-3:] == [1.0, 1.0, 1.0] and export[-4] == 0.0  # 12 minutes: the last two marks and now
    segment = [y for end, y in data.queue_depth["segment"]]
    assert sum(segment) == 6  # open for 30 minutes: six 5-minute marks
    assert dict(data.studies_by_state)["PENDING_REVIEW"] == 1 and dict(data.studies_by_state)["FAILED"] == 1
    assert {r.kind: r.depth for r in data.queue} == {"export": 1, "learn": 0, "segment": 0}
    assert {r.kind: r.counts.get("DEAD", 0) for r in data.queue}["learn"] == 1
    reasons = [e.reason for e in data.errors]
    assert "out of memory" in reasons and "no model for leg" in reasons
    assert data.disk is not None and data.disk.instances == 10 * 1000
