"""Durable storage: fsync'd, renamed into place, indexed before Success; idempotent; nothing half-written."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.dsutils import encode
from sqlalchemy import func, select

from dicom_node.core.config import RoutingRule
from dicom_node.core.db import Instance, Series, SeriesState, Study, StudyState, session_scope
from dicom_node.core.engine import make_engine
from dicom_node.core.metrics import NodeMetrics
from dicom_node.intake import store as store_module
from dicom_node.intake.received import StoreStatus
from dicom_node.intake.routing import Router
from dicom_node.intake.store import INCOMING_DIR, Incoming, Store
from tests.peers import make_image

EXPLICIT = "1.2.840.10008.1.2.1"


def incoming(ds: Dataset, *, association_id: int = 1, called_ae: str = "LAUREL", data: bytes | None = None) -> Incoming:
    encoded = encode(ds, False, True, False)
    assert encoded is not None
    return Incoming(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        context_uid=str(ds.SOPClassUID),
        transfer_syntax=EXPLICIT,
        data=encoded if data is None else data,
        calling_ae="STORESCU",
        called_ae=called_ae,
        association_id=association_id,
    )


@pytest.fixture
def store(tmp_path: Path, db_url: str) -> Any:
    """A store on each index backend (SQLite, PostgreSQL)."""
    engine = make_engine(db_url)
    rules = [
        RoutingRule(model="leg", called_ae="LAUREL_LEG"),
        RoutingRule(model="thigh", match={"SeriesDescription": "(?i)thigh"}),
    ]
    s = Store(tmp_path / "storage", engine, Router(rules), NodeMetrics())
    s.open()
    yield s
    s.close()
    engine.dispose()


def count(store: Store, model: type) -> int:
    with session_scope(store.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def leftovers(store: Store) -> list[Path]:
    return list((store.storage_dir / INCOMING_DIR).iterdir())


def test_an_instance_is_stored_as_received_and_indexed(store: Store) -> None:
    ds = make_image(generate_uid(), generate_uid(), patient_name="Doe^Jane", series_description="Thigh T1")
    result = store.receive(incoming(ds))
    assert result.status == StoreStatus.SUCCESS and not result.duplicate
    expected = store.instances_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert result.path == expected and expected.exists()
    back = dcmread(expected)
    assert back.file_meta.TransferSyntaxUID == EXPLICIT
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.SourceApplicationEntityTitle == "STORESCU"
    assert np.array_equal(back.pixel_array, ds.pixel_array)
    assert expected.read_bytes().endswith(incoming(ds).data)  # the dataset bytes, exactly as received
    with session_scope(store.engine) as session:
        study = session.scalars(select(Study)).one()
        series = session.scalars(select(Series)).one()
        instance = session.scalars(select(Instance)).one()
        assert study.StudyInstanceUID == ds.StudyInstanceUID and study.PatientName == "Doe^Jane"
        assert study.state == StudyState.RECEIVING and study.associations_open == 1
        assert series.model == "thigh" and series.state == SeriesState.ROUTED
        # recorded relative to storage_dir, so a restored backup works at another path
        assert instance.path == expected.relative_to(store.storage_dir).as_posix()
        assert instance.size == expected.stat().st_size
    assert leftovers(store) == []


def test_same_sop_instance_again_is_idempotent(store: Store) -> None:
    ds = make_image(generate_uid(), generate_uid())
    first = store.receive(incoming(ds))
    content = Path(str(first.path)).read_bytes()
    again = store.receive(incoming(ds, association_id=2))
    assert again.status == StoreStatus.SUCCESS and again.duplicate
    assert count(store, Instance) == 1 and Path(str(first.path)).read_bytes() == content
    assert leftovers(store) == []


def test_called_ae_routes_and_unmatched_series_stay_unrouted(store: Store) -> None:
    study_uid = generate_uid()
    leg = make_image(study_uid, generate_uid(), series_description="whatever")
    other = make_image(study_uid, generate_uid(), series_description="localizer")
    store.receive(incoming(leg, called_ae="LAUREL_LEG"))
    store.receive(incoming(other))
    with session_scope(store.engine) as session:
        models = {s.SeriesInstanceUID: (s.model, s.state) for s in session.scalars(select(Series))}
    assert models[leg.SeriesInstanceUID] == ("leg", SeriesState.ROUTED)
    assert models[other.SeriesInstanceUID] == (None, SeriesState.UNROUTED)


def test_truncated_dataset_is_refused_and_nothing_is_written(store: Store) -> None:
    ds = make_image(generate_uid(), generate_uid())
    item = incoming(ds)
    result = store.receive(incoming(ds, data=bytes(item.data)[:-300]))
    assert result.status == StoreStatus.CANNOT_UNDERSTAND
    assert count(store, Instance) == 0 and count(store, Study) == 0
    assert not (store.instances_dir / ds.StudyInstanceUID).exists() and leftovers(store) == []


def test_disk_full_while_writing_answers_out_of_resources_without_a_partial_file(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = store_module._write_all
    calls = {"n": 0}

    def fill_up(fd: int, data: bytes | memoryview) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # file meta written, then the disk is full in the middle of the dataset
            os.write(fd, bytes(memoryview(data)[:1000]))
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(store_module, "_write_all", fill_up)
    ds = make_image(generate_uid(), generate_uid())
    result = store.receive(incoming(ds))
    assert result.status == StoreStatus.OUT_OF_RESOURCES and result.comment == "out of disk space"
    assert leftovers(store) == [] and count(store, Instance) == 0
    assert not (store.instances_dir / ds.StudyInstanceUID).exists()
    monkeypatch.setattr(store_module, "_write_all", real_write_all)
    assert store.receive(incoming(ds)).status == StoreStatus.SUCCESS  # usable again once there is space


def test_failure_while_indexing_removes_the_placed_file_and_rolls_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_fsync_dir", broken_fsync)
    ds = make_image(generate_uid(), generate_uid())
    result = store.receive(incoming(ds))
    assert result.status == StoreStatus.OUT_OF_RESOURCES
    assert count(store, Instance) == 0 and count(store, Study) == 0
    assert not (store.instances_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm").exists()
    assert leftovers(store) == []


def test_concurrent_associations_share_group_commits(store: Store) -> None:
    study_uid = generate_uid()
    series = [generate_uid() for _ in range(4)]
    datasets = [[make_image(study_uid, s, instance_number=i + 1) for i in range(12)] for s in series]
    statuses: list[StoreStatus] = []
    lock = threading.Lock()

    def send(assoc: int) -> None:
        for ds in datasets[assoc]:
            status = store.receive(incoming(ds, association_id=assoc)).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [StoreStatus.SUCCESS] * 48
    assert count(store, Instance) == 48 and count(store, Series) == 4 and count(store, Study) == 1
    with session_scope(store.engine) as session:
        assert session.scalars(select(Study)).one().associations_open == 4
    for assoc in range(4):
        store.association_closed(assoc)
    with session_scope(store.engine) as session:
        study = session.scalars(select(Study)).one()
        assert study.associations_open == 0 and study.associations_ended_at is not None


def test_open_after_a_crash_clears_partial_files_and_open_associations(store: Store, tmp_path: Path) -> None:
    ds = make_image(generate_uid(), generate_uid())
    store.receive(incoming(ds, association_id=7))
    (store.storage_dir / INCOMING_DIR / "tmpabc.part").write_bytes(b"half")
    restarted = Store(store.storage_dir, store.engine, Router([]))
    restarted.open()
    assert leftovers(restarted) == []
    with session_scope(store.engine) as session:
        study = session.scalars(select(Study)).one()
        assert study.associations_open == 0 and study.associations_ended_at is not None


def test_recovery_indexes_files_whose_rows_were_lost_and_removes_partial_ones(store: Store) -> None:
    from sqlalchemy import delete

    from dicom_node.intake.store import CLEAN_MARKER

    study_uid, series_uid = generate_uid(), generate_uid()
    kept, lost, partial = (make_image(study_uid, series_uid, instance_number=i) for i in (1, 2, 3))
    for ds in (kept, lost, partial):
        assert store.receive(incoming(ds)).status == StoreStatus.SUCCESS
    paths = {ds.SOPInstanceUID: store.path_for(study_uid, series_uid, ds.SOPInstanceUID) for ds in (lost, partial)}
    with session_scope(store.engine) as session:  # a power loss took the last rows with it...
        session.execute(delete(Instance).where(Instance.SOPInstanceUID.in_(list(paths))))
    data = paths[partial.SOPInstanceUID].read_bytes()  # ...and the tail of a file never acknowledged
    paths[partial.SOPInstanceUID].write_bytes(data[: len(data) // 2])
    derived = store.storage_dir / "derived" / "1" / "2"
    derived.mkdir(parents=True)
    foreign = make_image(study_uid, series_uid, instance_number=9)
    foreign.save_as(derived / "draft.dcm", enforce_file_format=True)
    misnamed = paths[lost.SOPInstanceUID].parent / "1.2.3.4.dcm"  # its name is not its SOP Instance UID
    foreign.save_as(misnamed, enforce_file_format=True)
    assert not (store.storage_dir / CLEAN_MARKER).exists()
    restarted = Store(store.storage_dir, store.engine, Router([]))
    restarted.open()  # no clean-shutdown marker: the recovery scan runs
    with session_scope(store.engine) as session:
        indexed = set(session.scalars(select(Instance.SOPInstanceUID)))
    assert indexed == {kept.SOPInstanceUID, lost.SOPInstanceUID}
    assert not paths[partial.SOPInstanceUID].exists() and (derived / "draft.dcm").exists() and misnamed.exists()
    kept = store.storage_dir / ".quarantine" / paths[partial.SOPInstanceUID].relative_to(store.instances_dir)
    assert kept.read_bytes() == data[: len(data) // 2]  # never deleted: moved where a person can look
    restarted.close()
    restarted.mark_clean_shutdown()
    again = Store(store.storage_dir, store.engine, Router([]))
    again.open()  # clean: no scan, and the marker is consumed
    assert not (store.storage_dir / CLEAN_MARKER).exists()


def test_a_series_uid_reused_under_another_study_is_refused_never_mixed(store: Store) -> None:
    series_uid = generate_uid()
    alice = make_image(generate_uid(), series_uid, patient_name="SYNTHETIC^ALICE", patient_id="A1")
    bob = make_image(generate_uid(), series_uid, patient_name="SYNTHETIC^BOB", patient_id="B2")
    assert store.receive(incoming(alice)).status == StoreStatus.SUCCESS
    refused = store.receive(incoming(bob, association_id=2))
    assert refused.status == StoreStatus.CANNOT_UNDERSTAND
    assert refused.comment is not None and "another study" in refused.comment
    with session_scope(store.engine) as session:
        assert [s.PatientID for s in session.scalars(select(Study))] == ["A1"]  # no study made for Bob
        (series,) = session.scalars(select(Series)).all()
        assert [i.SOPInstanceUID for i in series.instances] == [alice.SOPInstanceUID]
    assert not (store.instances_dir / bob.StudyInstanceUID).exists() and leftovers(store) == []


def test_a_sop_instance_uid_reused_under_another_series_is_refused(store: Store) -> None:
    study_uid = generate_uid()
    first = make_image(study_uid, generate_uid())
    other = make_image(study_uid, generate_uid())
    other.SOPInstanceUID = first.SOPInstanceUID
    other.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    assert store.receive(incoming(first)).status == StoreStatus.SUCCESS
    refused = store.receive(incoming(other))
    assert refused.status == StoreStatus.CANNOT_UNDERSTAND and "another series" in str(refused.comment)
    assert store.receive(incoming(first)).duplicate  # the same instance again is still idempotent
    assert count(store, Instance) == 1 and count(store, Series) == 1


def test_uids_cannot_name_the_nodes_own_folders(store: Store) -> None:
    """Received files live in their own tree: a study UID like 'derived' or 'models' lands under instances/."""
    ds = make_image("models", "derived")
    result = store.receive(incoming(ds))
    assert result.status == StoreStatus.SUCCESS
    assert result.path is not None and result.path.is_relative_to(store.instances_dir)
    assert not (store.storage_dir / "models" / "derived").exists()
