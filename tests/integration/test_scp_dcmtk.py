"""The SCP against DCMTK and pynetdicom clients: studies arrive, complete; policy; limits; TCP_NODELAY."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dicom_node.core.db import Instance, Job, Series, SeriesState, Study, StudyState, session_scope
from tests.peers import c_echo, echoscu, storescu, wait_until, write_study

pytestmark = pytest.mark.peers


def study_state(node: Any, study_uid: str) -> str | None:
    with session_scope(node.engine) as session:
        study = session.scalars(select(Study).where(Study.StudyInstanceUID == study_uid)).one_or_none()
        return None if study is None else study.state


def test_storescu_study_is_indexed_and_completes(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory(routing=[{"model": "thigh", "match": {"SeriesDescription": "(?i)thigh"}}])
    study = write_study(tmp_path / "in", series=3, instances=4, descriptions=["Thigh T1", "Thigh PD", "Localizer"])
    proc = storescu(node.port, study.paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with session_scope(node.engine) as session:
        row = session.scalars(select(Study).where(Study.StudyInstanceUID == study.study_uid)).one()
        series = {s.SeriesInstanceUID: s for s in row.series}
        assert len(series) == 3
        assert [len(series[uid].instances) for uid in study.series_uids] == [4, 4, 4]
        assert series[study.series_uids[0]].model == "thigh"
        assert series[study.series_uids[2]].state == SeriesState.UNROUTED
        for series_row in series.values():
            assert series_row.calling_ae == "STORESCU" and series_row.called_ae == "LAUREL"
            assert all((node.config.node.storage_dir / i.path).is_file() for i in series_row.instances)
    wait_until(lambda: study_state(node, study.study_uid) == StudyState.COMPLETE, 30, 0.1, "the study to complete")
    with session_scope(node.engine) as session:
        jobs = [(j.kind, j.payload) for j in session.scalars(select(Job).where(Job.kind == "segment"))]
        assert jobs == [("segment", {"study_id": row.id})]


def test_resending_a_study_is_idempotent(node: Any, study: Any) -> None:
    for _ in range(2):
        proc = storescu(node.port, study.paths)
        assert proc.returncode == 0, proc.stderr
    with session_scope(node.engine) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == len(study.paths)


def _rejection(assoc: Any) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive
    return (rj.result, rj.result_source, rj.diagnostic)


def _refused(outcome: Any) -> tuple[int, int, int] | None:
    return outcome.rejection


def test_association_policy_rejects_with_the_proper_reason_and_keeps_serving(node: Any, study: Any) -> None:
    wrong_called = storescu(node.port, study.paths[:1], called_ae="NOT_LAUREL")
    assert wrong_called.returncode != 0 and "Association Rejected" in wrong_called.stderr + wrong_called.stdout
    assert _refused(c_echo(node.port, "NOT_LAUREL")) == (1, 1, 7)
    unknown_calling = echoscu(node.port, calling_ae="NOBODY")
    assert unknown_calling.returncode != 0
    assert _refused(c_echo(node.port, calling_ae="NOBODY")) == (1, 1, 3)
    # STORESCU is configured on 127.0.0.1; the same AE title from 127.0.0.2 is an unknown host.
    from_elsewhere = c_echo(node.port, bind_address=("127.0.0.2", 0))
    assert from_elsewhere.is_rejected and _refused(from_elsewhere) == (1, 1, 3)
    assert echoscu(node.port).returncode == 0
    assert c_echo(node.port).echo_status == 0
    with session_scope(node.engine) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 0
    text = node.metrics.render().decode()
    for outcome in ("rejected_called_ae", "rejected_calling_ae", "rejected_host"):
        assert f'outcome="{outcome}"' in text


def test_concurrent_associations_are_bounded(node_factory: Any) -> None:
    from pynetdicom import AE

    node = node_factory(node={"max_associations": 2})
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = [ae.associate("127.0.0.1", node.port, ae_title="LAUREL") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        extra = ae.associate("127.0.0.1", node.port, ae_title="LAUREL")
        assert extra.is_rejected and _rejection(extra) == (2, 3, 2)
    finally:
        for a in held:
            a.release()
    wait_until(lambda: c_echo(node.port).echo_status == 0, 10, 0.1, "a free association slot")


def test_accepted_sockets_have_tcp_nodelay_and_keepalive(node: Any) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="LAUREL")
    try:
        assert assoc.is_established
        server_side = wait_until(lambda: node.scp.server.active_associations, 5, 0.02, "the acceptor")
        sock = server_side[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    finally:
        assoc.release()


def test_many_short_associations_in_a_row(node: Any, study: Any) -> None:
    for path in study.paths:
        assert storescu(node.port, [path]).returncode == 0
    for _ in range(5):
        assert c_echo(node.port).echo_status == 0
    with session_scope(node.engine) as session:
        assert session.scalar(select(func.count()).select_from(Series)) == 3
        assert session.scalar(select(func.count()).select_from(Instance)) == len(study.paths)
