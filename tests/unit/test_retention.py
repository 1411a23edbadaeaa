"""Retention deletes received files only after the configured time, only for finished or unrouted data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import Series, SeriesState, Study, StudyState, session_scope, utcnow
from dicom_node.core.engine import make_engine
from dicom_node.intake.routing import Router
from dicom_node.intake.store import Store
from dicom_node.work.retention import apply_retention, instance_files_exist
from tests.peers import make_image
from tests.unit.test_store import incoming


def test_retention_rules(tmp_path: Path) -> None:
    cfg = NodeConfig.load(
        None,
        node={"storage_dir": str(tmp_path / "node")},
        retention={"finished_study_days": 30, "unrouted_days": 7},
        routing=[{"model": "leg", "match": {"SeriesDescription": "leg"}}],
        api={"enabled": False},
    )
    engine = make_engine(cfg.node.db_url)
    store = Store(cfg.node.storage_dir, engine, Router(cfg.routing))
    store.open()
    studies = {name: generate_uid() for name in ("exported_old", "exported_new", "review_old", "unrouted")}
    for name, uid in studies.items():
        description = "localizer" if name == "unrouted" else "leg"
        series_uid = generate_uid()
        for i in range(2):
            ds = make_image(uid, series_uid, instance_number=i + 1, series_description=description)
            assert store.receive(incoming(ds)).status == 0
    now = utcnow()
    with session_scope(engine) as session:
        by_uid = {s.StudyInstanceUID: s for s in session.scalars(select(Study))}
        old, recent = now - timedelta(days=31), now - timedelta(days=1)
        for name, state, finished in (
            ("exported_old", StudyState.EXPORTED, old),
            ("exported_new", StudyState.EXPORTED, recent),
            ("review_old", StudyState.PENDING_REVIEW, None),
            ("unrouted", StudyState.COMPLETE, None),
        ):
            study = by_uid[studies[name]]
            study.state, study.finished_at, study.last_received_at = state, finished, old
    report = apply_retention(engine, cfg, now=now)
    assert report.as_dict()["studies"] == 1 and report.series == 2 and report.files == 4
    with session_scope(engine) as session:
        by_uid = {s.StudyInstanceUID: s for s in session.scalars(select(Study))}
        gone = by_uid[studies["exported_old"]]
        assert gone.files_deleted_at is not None
        unrouted = session.scalars(select(Series).where(Series.state == SeriesState.UNROUTED)).one()
        assert unrouted.files_deleted_at is not None
        ids = {name: by_uid[uid].id for name, uid in studies.items()}
    root = cfg.node.storage_dir
    assert not instance_files_exist(engine, ids["exported_old"], root)
    assert not instance_files_exist(engine, ids["unrouted"], root)
    assert instance_files_exist(engine, ids["exported_new"], root)
    assert instance_files_exist(engine, ids["review_old"], root)
    assert not (store.instances_dir / studies["exported_old"]).exists()
    assert store.instances_dir.is_dir()
    assert apply_retention(engine, cfg, now=now).files == 0  # idempotent
    store.close()
    engine.dispose()
