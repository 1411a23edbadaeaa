"""DICOM TLS (PS3.15): DCMTK and Orthanc send to the node's TLS port; the node writes back to Orthanc over TLS;
peers without a trusted certificate, plain connections and stalled handshakes are refused within bounds.

Certificates come from the session's test PKI (``pki`` fixture, :mod:`tests.certs`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dicom_node.core.db import Instance, Job, JobState, session_scope
from dicom_node.work.export import echo, enqueue_export
from tests.peers import PEER_ENV, c_echo, free_port, port_open, require, storescu, wait_until, write_study

pytestmark = pytest.mark.peers


def tls_section(pki: Any, **overrides: Any) -> dict[str, Any]:
    """The node's ``tls`` settings with the test PKI's node certificate and CA on a free port."""
    section = {
        "certificate": str(pki.node.certificate),
        "private_key": str(pki.node.private_key),
        "ca_certificates": str(pki.ca),
        "port": free_port(),
    }
    section.update(overrides)
    return section


def tls_node(node_factory: Any, pki: Any, **tls: Any) -> Any:
    """An in-process node with a TLS listener (and the plain one unless ``plain_port=False``)."""
    return node_factory(tls=tls_section(pki, **tls))


def stored_count(node: Any) -> int:
    with session_scope(node.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def dcmtk_tls(credentials: Any | None, ca: Path) -> list[str]:
    """DCMTK's TLS options: our key and certificate (or anonymous TLS), the CA that signs the node's."""
    if credentials is None:
        return ["+tla", "+cf", str(ca)]
    return ["+tls", str(credentials.private_key), str(credentials.certificate), "+cf", str(ca)]


def echoscu_tls(port: int, tls_args: list[str], calling_ae: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    exe = require("echoscu")
    cmd = [exe, *tls_args, "-aet", calling_ae, "-aec", "LAUREL", "127.0.0.1", str(port)]
    return subprocess.run(cmd, env=PEER_ENV, capture_output=True, text=True, timeout=60, check=False)


def peer_context(pki: Any, credentials: Any) -> ssl.SSLContext:
    """A Python TLS client context presenting ``credentials`` and trusting the test CA."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(credentials.certificate), str(credentials.private_key))
    return context


# ------------------------------------------------------------------------------------------- the TLS listener
def test_storescu_and_echoscu_over_tls_are_stored(node_factory: Any, pki: Any, tmp_path: Path) -> None:
    node = tls_node(node_factory, pki)
    study = write_study(tmp_path / "in", series=2, instances=3)
    proc = storescu(node.scp.tls_port, study.paths, extra=dcmtk_tls(pki.peer, pki.ca))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stored_count(node) == 6
    echo_proc = echoscu_tls(node.scp.tls_port, dcmtk_tls(pki.peer, pki.ca))
    assert echo_proc.returncode == 0, echo_proc.stdout + echo_proc.stderr
    assert c_echo(node.port).echo_status == 0  # the plain port serves beside it


@pytest.mark.parametrize("who", ["unknown CA", "no certificate"])
def test_sender_without_a_trusted_certificate_is_refused(
    node_factory: Any, pki: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, who: str
) -> None:
    node = tls_node(node_factory, pki)
    study = write_study(tmp_path / "in", series=1, instances=1)
    credentials = pki.rogue if who == "unknown CA" else None
    with caplog.at_level(logging.WARNING, logger="dicom_node.intake.fastnet"):
        proc = storescu(node.scp.tls_port, study.paths, extra=dcmtk_tls(credentials, pki.ca))
        assert proc.returncode != 0
        wait_until(lambda: "TLS connection from 127.0.0.1" in caplog.text, 10, 0.05, "the refusal in the log")
    assert "certificate" in caplog.text.lower()
    assert stored_count(node) == 0
    ok = storescu(node.scp.tls_port, study.paths, extra=dcmtk_tls(pki.peer, pki.ca))
    assert ok.returncode == 0, ok.stdout + ok.stderr  # the listener still serves trusted peers
    assert stored_count(node) == 1


def test_anonymous_tls_is_accepted_when_client_certificates_are_optional(
    node_factory: Any, pki: Any, tmp_path: Path
) -> None:
    node = tls_node(node_factory, pki, require_client_certificate=False)
    study = write_study(tmp_path / "in", series=1, instances=2)
    proc = storescu(node.scp.tls_port, study.paths, extra=dcmtk_tls(None, pki.ca))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stored_count(node) == 2


def test_plain_dicom_on_the_tls_port_is_refused(node_factory: Any, pki: Any, caplog: pytest.LogCaptureFixture) -> None:
    node = tls_node(node_factory, pki)
    with caplog.at_level(logging.WARNING, logger="dicom_node.intake.fastnet"):
        outcome = c_echo(node.scp.tls_port)
        wait_until(lambda: "TLS handshake failed" in caplog.text, 10, 0.05, "the refusal in the log")
    assert outcome.echo_status is None and not outcome.is_rejected


def test_tls_only_node_has_no_plain_port(node_factory: Any, pki: Any, tmp_path: Path) -> None:
    plain = free_port()
    node = node_factory(node={"port": plain}, tls=tls_section(pki, plain_port=False))
    assert not port_open(plain)
    assert echoscu_tls(node.scp.tls_port, dcmtk_tls(pki.peer, pki.ca), calling_ae="STORESCU").returncode == 0


def test_stalled_handshake_neither_blocks_others_nor_holds_its_connection(node_factory: Any, pki: Any) -> None:
    node = node_factory(node={"network_timeout": 2}, tls=tls_section(pki))
    stalled = socket.create_connection(("127.0.0.1", node.scp.tls_port))
    try:
        # The handshake runs on the connection's thread: the accept loop serves the next peer at once.
        proc = echoscu_tls(node.scp.tls_port, dcmtk_tls(pki.peer, pki.ca))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        stalled.settimeout(0.2)

        def closed_by_node() -> bool:
            try:
                return stalled.recv(1) == b""
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True

        wait_until(closed_by_node, 30, 0.05, "the node to drop the stalled handshake")
    finally:
        stalled.close()


def test_pdu_bounds_hold_inside_tls(node_factory: Any, pki: Any) -> None:
    """An A-ASSOCIATE-RQ header claiming 4 GiB, sent over TLS, is rejected from its header."""
    node = tls_node(node_factory, pki)
    context = peer_context(pki, pki.peer)
    with (
        socket.create_connection(("127.0.0.1", node.scp.tls_port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(struct.pack(">BBL", 0x01, 0x00, 0xFFFFFFF0) + b"\0" * 64)
        tls.settimeout(10)
        answer = tls.recv(10)
    assert answer == struct.pack(">BBLBBBB", 0x03, 0x00, 4, 0x00, 0x01, 0x02, 0x01)


def test_tls_associations_have_tcp_nodelay(node_factory: Any, pki: Any) -> None:
    from pynetdicom import AE

    node = tls_node(node_factory, pki)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(
        "127.0.0.1", node.scp.tls_port, ae_title="LAUREL", tls_args=(peer_context(pki, pki.peer), "localhost")
    )
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        server_side = wait_until(lambda: node.scp._tls_server.active_associations, 5, 0.02, "the acceptor")
        sock = server_side[0].dul.socket.socket
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


# ------------------------------------------------------------------------------------------- Orthanc both ways
def orthanc_tls(pki: Any, credentials: Any, modalities: dict[str, Any] | None = None) -> dict[str, Any]:
    """Orthanc's DICOM TLS settings (its SCP becomes TLS-only) with ``credentials`` and the test CA trusted."""
    config: dict[str, Any] = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(credentials.certificate),
        "DicomTlsPrivateKey": str(credentials.private_key),
        "DicomTlsTrustedCertificates": str(pki.ca),
        "DicomTlsRemoteCertificateRequired": True,
    }
    if modalities is not None:
        config["DicomModalities"] = modalities
    return config


def _pacs_peer(port: int) -> dict[str, Any]:
    return {
        "name": "pacs",
        "ae_title": "ORTHANC",
        "host": "127.0.0.1",
        "port": port,
        "send_to_us": False,
        "receive_results": True,
        "tls": True,
    }


def _job(node: Any, job_id: int) -> Job:
    with session_scope(node.engine) as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def _export(node: Any, paths: list[Path]) -> int:
    with session_scope(node.engine) as session:
        job_id = enqueue_export(session, "pacs", [str(p) for p in paths], "TLS write-back").id
    node.jobs.notify()
    return job_id


def test_write_back_to_orthanc_over_tls(node_factory: Any, orthanc_factory: Any, pki: Any, tmp_path: Path) -> None:
    orthanc = orthanc_factory(extra_config=orthanc_tls(pki, pki.peer))
    # tls.port null: the node has no TLS listener, only its TLS identity for write-back.
    node = node_factory(peers=[_pacs_peer(orthanc.dicom_port)], tls=tls_section(pki, port=None))
    assert node.scp.tls_port is None
    assert echo("LAUREL", node.config.peer("pacs"), timeout=10, tls=node.config.tls) == 0
    study = write_study(tmp_path / "out", series=1, instances=3)
    job_id = _export(node, study.paths)
    wait_until(lambda: _job(node, job_id).state == JobState.DONE, 60, 0.1, "the TLS export job")
    assert orthanc.sop_instance_uids() == set(study.sop_instance_uids)


def test_write_back_refuses_a_pacs_with_an_untrusted_certificate(
    node_factory: Any, orthanc_factory: Any, pki: Any, tmp_path: Path
) -> None:
    # Orthanc trusts the node (test CA) but presents a certificate of a CA the node does not trust.
    orthanc = orthanc_factory(extra_config=orthanc_tls(pki, pki.rogue))
    node = node_factory(peers=[_pacs_peer(orthanc.dicom_port)], tls=tls_section(pki, port=None))
    study = write_study(tmp_path / "out", series=1, instances=1)
    job_id = _export(node, study.paths)
    failed = wait_until(
        lambda: (j := _job(node, job_id)).attempts >= 2 and j.state == JobState.FAILED and j, 60, 0.05, "retries"
    )
    assert "certificate is not trusted" in str(failed.last_error)
    assert orthanc.instances() == []


def test_orthanc_sends_to_the_node_over_tls(node_factory: Any, orthanc_factory: Any, pki: Any, tmp_path: Path) -> None:
    tls_port = free_port()
    orthanc_port = free_port()
    node = node_factory(
        peers=[{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_port}],
        tls=tls_section(pki, port=tls_port),
    )
    laurel = {"AET": "LAUREL", "Host": "127.0.0.1", "Port": tls_port, "UseDicomTls": True}
    orthanc = orthanc_factory(dicom_port=orthanc_port, extra_config=orthanc_tls(pki, pki.peer, {"laurel": laurel}))
    study = write_study(tmp_path / "in", series=2, instances=2)
    orthanc.upload(study.paths)
    orthanc.store_to("laurel", [orthanc.study_id(study.study_uid)])
    assert stored_count(node) == 4
