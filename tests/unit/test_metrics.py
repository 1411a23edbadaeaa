"""Each node has its own metrics registry; gauges mirror the database."""

from __future__ import annotations

from pathlib import Path

from dicom_node.core.db import Study, session_scope
from dicom_node.core.engine import make_engine
from dicom_node.core.jobs import enqueue
from dicom_node.core.metrics import NodeMetrics


def test_registries_are_per_node_and_render(tmp_path: Path) -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.instances_received.labels(result="stored").inc(3)
    text = a.render().decode()
    assert 'laurel_instances_received_total{result="stored"} 3.0' in text
    assert 'laurel_instances_received_total{result="stored"}' not in b.render().decode()
    for name in (
        "laurel_studies_completed_total",
        "laurel_series_segmented_total",
        "laurel_studies_approved_total",
        "laurel_instances_exported_total",
        "laurel_store_seconds",
        "laurel_job_seconds",
    ):
        assert name in text or name.replace("_total", "") in text


def test_refresh_mirrors_queue_depth_and_studies(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    metrics = NodeMetrics()
    with session_scope(engine) as session:
        session.add(Study(StudyInstanceUID="1.2.3"))
        enqueue(session, "export", {})
        dead = enqueue(session, "export", {}, dedupe_key="x")
        dead.state = "DEAD"
    with session_scope(engine) as session:
        metrics.refresh(session)
    text = metrics.render().decode()
    assert 'laurel_queue_depth{kind="export",state="QUEUED"} 1.0' in text
    assert "laurel_dead_letters 1.0" in text
    assert 'laurel_studies{state="RECEIVING"} 1.0' in text
    engine.dispose()
