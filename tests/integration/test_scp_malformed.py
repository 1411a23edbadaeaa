"""Malformed input gets a failure status, nothing is stored half, and the node keeps answering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_node.core.db import Instance, Study, session_scope
from dicom_node.intake.received import StoreStatus
from dicom_node.intake.store import INCOMING_DIR, StoreResult
from tests.peers import CT_IMAGE, c_echo, echoscu, make_image, store_datasets, store_raw

pytestmark = pytest.mark.peers


def _files(node: Any) -> list[Path]:
    return [p for p in node.store.storage_dir.rglob("*") if p.is_file() and p.suffix in (".dcm", ".part")]


def _indexed(node: Any) -> int:
    with session_scope(node.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_malformed_instances_fail_and_leave_nothing_behind(node: Any, tmp_path: Path) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    good = make_image(study_uid, series_uid, instance_number=1)
    good_path = tmp_path / "good.dcm"
    good.save_as(good_path, enforce_file_format=True)

    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good_path.read_bytes()[:-700])

    no_pixels = tmp_path / "no-pixels.dcm"
    make_image(study_uid, series_uid, instance_number=2, pixel_data=False).save_as(no_pixels, enforce_file_format=True)

    wrong_class = tmp_path / "wrong-class.dcm"  # the file meta says CT Image, the dataset is an MR image
    make_image(study_uid, series_uid, instance_number=3).save_as(wrong_class, enforce_file_format=True)
    raw = wrong_class.read_bytes()
    mr = b"1.2.840.10008.5.1.4.1.1.4\x00"
    wrong_class.write_bytes(raw.replace(mr, CT_IMAGE.encode() + b"\x00", 1))  # the first one is in the file meta

    statuses = store_raw(node.port, [truncated, no_pixels, wrong_class])
    assert statuses == [
        StoreStatus.CANNOT_UNDERSTAND,
        StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ]
    assert _indexed(node) == 0 and _files(node) == []
    with session_scope(node.engine) as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 0
    assert echoscu(node.port).returncode == 0
    # the same association goes on after a failure: bad, good, bad, good
    second = make_image(study_uid, series_uid, instance_number=4)
    second_path = tmp_path / "second.dcm"
    second.save_as(second_path, enforce_file_format=True)
    assert store_raw(node.port, [truncated, good_path, no_pixels, second_path]) == [0xC000, 0, 0xA900, 0]
    assert _indexed(node) == 2
    assert not list((node.store.storage_dir / INCOMING_DIR).iterdir())


def test_a_handler_exception_becomes_a_failure_status_not_a_dead_association(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_receive = node.store.receive
    calls = {"n": 0}

    def flaky(item: Any, *args: Any) -> StoreResult:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated bug")
        return real_receive(item)

    monkeypatch.setattr(node.store, "receive", flaky)
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [make_image(study_uid, series_uid, instance_number=i) for i in (1, 2)]
    statuses = store_datasets(node.port, datasets)
    assert int(statuses[0].Status) == StoreStatus.PROCESSING_FAILURE
    assert "failed to process" in str(statuses[0].get("ErrorComment", ""))
    assert int(statuses[1].Status) == 0
    assert _indexed(node) == 1
    assert c_echo(node.port).echo_status == 0


def test_pynetdicom_path_gives_the_same_answers(node_factory: Any, tmp_path: Path) -> None:
    """With the fast path off, pynetdicom's own C-STORE path stores and refuses the same way."""
    from tests.peers import storescu, write_study

    node = node_factory(start=False)
    node.scp.fast_path = False
    node.start()
    study = write_study(tmp_path / "study", series=2, instances=2)
    assert storescu(node.port, study.paths).returncode == 0
    good = study.paths[0]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-700])
    no_pixels = tmp_path / "no-pixels.dcm"
    make_image(generate_uid(), generate_uid(), pixel_data=False).save_as(no_pixels, enforce_file_format=True)
    assert store_raw(node.port, [truncated, no_pixels, good]) == [0xC000, 0xA900, 0]
    assert _indexed(node) == 4 and c_echo(node.port).echo_status == 0


def test_disk_full_answers_out_of_resources_and_the_association_goes_on(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from dicom_node.intake import store as store_module

    real_write_all = store_module._write_all
    calls = {"n": 0}

    def disk_full_once(fd: int, data: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # in the middle of the first instance's dataset
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(store_module, "_write_all", disk_full_once)
    study_uid, series_uid = generate_uid(), generate_uid()
    statuses = store_datasets(node.port, [make_image(study_uid, series_uid, instance_number=i) for i in (1, 2)])
    assert [int(s.Status) for s in statuses] == [StoreStatus.OUT_OF_RESOURCES, 0]
    assert statuses[0].ErrorComment == "out of disk space"
    assert _indexed(node) == 1 and len(_files(node)) == 1


def test_stored_files_are_as_valid_as_what_was_sent(node: Any, tmp_path: Path) -> None:
    from pydicom import dcmread

    from tests.peers import dciodvfy, storescu, write_study

    study = write_study(tmp_path / "study", series=1, instances=1)
    assert storescu(node.port, study.paths).returncode == 0
    (stored,) = _files(node)
    assert dcmread(stored).file_meta.SourceApplicationEntityTitle == "STORESCU"
    assert set(dciodvfy(stored)) <= set(dciodvfy(study.paths[0]))  # our file meta adds no error
