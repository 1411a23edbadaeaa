"""Every peer is bounded: PDU lengths before and after acceptance, stalled peers, deflated datasets.

Raw sockets play the misbehaving peers (an A-ASSOCIATE-RQ built by hand, half PDUs, headers claiming 4 GiB);
DCMTK storescu and pynetdicom play the well-behaved ones that must keep being served.
"""

from __future__ import annotations

import logging
import socket
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import encode
from sqlalchemy import func, select

from dicom_node.core.db import Instance, session_scope
from dicom_node.core.engine import make_engine
from dicom_node.intake.netguard import set_nodelay
from dicom_node.intake.received import StoreStatus
from tests.peers import NodeProcess, c_echo, make_image, node_settings, store_raw, storescu, wait_until

pytestmark = pytest.mark.peers

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
CLAIM_4_GIB = 0xFFFFFFFF
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_ABORT = 0x02, 0x03, 0x04, 0x07
#: A-ASSOCIATE-RJ body: reserved, rejected-permanent, service-provider (ACSE), no reason given.
RJ_TOO_LONG = bytes([0, 1, 2, 1])
#: A-ABORT body: reserved ×2, service-provider, invalid PDU parameter value.
ABORT_TOO_LONG = bytes([0, 0, 2, 6])


# ---------------------------------------------------------------------------------------------- a raw peer
def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _associate_rq(called: str = "LAUREL", calling: str = "STORESCU") -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification (PS3.8 9.3.2), encoded by hand."""
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION.encode()) + _item(0x40, IMPLICIT.encode()))
    user = _item(0x50, _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.3811.99"))
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1") + context + user
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)  # a deadline for the node's answer
    set_nodelay(sock)
    return sock


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def _read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next PDU the node sends as (type, body), or ``None`` when it closed the connection."""
    header = _recv(sock, 6)
    if len(header) < 6:
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _recv(sock, length)


def _raw_association(port: int) -> socket.socket:
    """A connection whose association the node has accepted (A-ASSOCIATE-AC received)."""
    sock = _connect(port)
    sock.sendall(_associate_rq())
    answer = _read_pdu(sock)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC, answer
    return sock


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def _indexed(engine: Any) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


# ---------------------------------------------------------------------------------------------- PDU lengths
def test_pdu_headers_claiming_4_gib_cost_no_memory_and_the_node_keeps_serving(tmp_path: Path, study: Any) -> None:
    node = NodeProcess(tmp_path / "node", node_settings(tmp_path)).start()
    try:
        assert storescu(node.port, study.paths[:1]).returncode == 0  # the first store's one-off costs
        before = _rss_kib(node.pid)
        for _ in range(4):
            with _connect(node.port) as sock:  # before acceptance: an A-ASSOCIATE-RQ "of 4 GiB"
                sock.sendall(struct.pack(">BBL", 0x01, 0, CLAIM_4_GIB))
                assert _read_pdu(sock) == (A_ASSOCIATE_RJ, RJ_TOO_LONG)
                assert _read_pdu(sock) is None
            with _connect(node.port) as sock:  # before acceptance: a P-DATA-TF "of 4 GiB"
                sock.sendall(struct.pack(">BBL", P_DATA_TF, 0, CLAIM_4_GIB))
                assert _read_pdu(sock) == (A_ABORT, ABORT_TOO_LONG)
                assert _read_pdu(sock) is None
            with _raw_association(node.port) as sock:  # after acceptance: a P-DATA-TF "of 4 GiB"
                sock.sendall(struct.pack(">BBL", P_DATA_TF, 0, CLAIM_4_GIB))
                assert _read_pdu(sock) == (A_ABORT, ABORT_TOO_LONG)
                assert _read_pdu(sock) is None
        grown = _rss_kib(node.pid) - before
        assert grown < 10 * 1024, f"the node's RSS grew by {grown} KiB after 12 PDU headers claiming 4 GiB"
        proc = storescu(node.port, study.paths[1:])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        engine = make_engine(f"sqlite:///{node.storage_dir / 'laurel.db'}")
        wait_until(lambda: _indexed(engine) == len(study.paths), 30, 0.1, "every instance indexed")
        engine.dispose()
        log = node.log()
        refusals = [line for line in log.splitlines() if "association from 127.0.0.1:" in line and "more than" in line]
        assert len(refusals) == 12, log[-3000:]
        assert "Traceback" not in log
    finally:
        node.stop()


def test_stalled_peers_are_aborted_and_free_their_slots(
    node_factory: Any, study: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node = node_factory(node={"max_associations": 3, "network_timeout": 2})
    stalled = [_raw_association(node.port) for _ in range(3)]
    for sock in stalled[:2]:  # half a P-DATA-TF PDU, then nothing
        sock.sendall(struct.pack(">BBL", P_DATA_TF, 0, 1000) + bytes(400))
    # stalled[2] sends nothing at all after its A-ASSOCIATE-AC
    half_request = _connect(node.port)  # half an A-ASSOCIATE-RQ, then nothing
    half_request.sendall(_associate_rq()[:40])

    wait_until(
        lambda: storescu(node.port, study.paths).returncode == 0, 60, 0.2, "a slot for a fourth sender (storescu)"
    )
    assert _indexed(node.engine) == len(study.paths)
    for i, sock in enumerate([*stalled, half_request]):
        with sock:
            answer = _read_pdu(sock)
            assert answer is not None and answer[0] == A_ABORT, (i, answer)
            assert _read_pdu(sock) is None
    text = caplog.text
    assert text.count("sent nothing for 2 s in the middle of a PDU; aborted") == 2
    assert text.count("nothing received for 2") == 1
    assert text.count("did not complete its association request in time; aborted") == 1
    assert "Traceback" not in text
    assert c_echo(node.port).echo_status == 0


# ---------------------------------------------------------------------------------------------- deflate
def _deflated_file(path: Path, ds: Dataset, zero_pixel_bytes: int = 0) -> Path:
    """``ds`` as a Deflated Explicit VR Little Endian file; ``zero_pixel_bytes``: PixelData of that many zeros.

    The zeros are deflated as a stream, so a file of ~1/1000 of the inflated size is made without holding it.
    """
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = encode(ds, False, True)
    assert head is not None
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(head)]
    if zero_pixel_bytes:
        parts.append(deflater.compress(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, zero_pixel_bytes)))
        chunk = bytes(1 << 20)
        for start in range(0, zero_pixel_bytes, len(chunk)):
            parts.append(deflater.compress(chunk[: min(len(chunk), zero_pixel_bytes - start)]))
    parts.append(deflater.flush())
    body = b"".join(parts)
    if len(body) % 2:
        body += b"\x00"
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    path.write_bytes(bytes(128) + b"DICM" + fp.getvalue() + body)
    return path


@pytest.mark.parametrize(
    ("max_inflated_size", "inflated_mib"),
    [(None, 80), (8 << 20, 12)],
    ids=["64-times-what-arrived", "node.max_inflated_size"],
)
def test_a_deflated_dataset_inflating_beyond_the_bound_is_refused(
    node_factory: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    max_inflated_size: int | None,
    inflated_mib: int,
) -> None:
    caplog.set_level(logging.INFO)
    node = node_factory(node={"max_inflated_size": max_inflated_size} if max_inflated_size else {})
    study_uid, series_uid = generate_uid(), generate_uid()
    bomb = _deflated_file(
        tmp_path / "bomb.dcm", make_image(study_uid, series_uid, pixel_data=False), inflated_mib << 20
    )
    assert bomb.stat().st_size * 64 < inflated_mib << 20  # it inflates more than 64-fold
    good = _deflated_file(tmp_path / "good.dcm", make_image(study_uid, series_uid, instance_number=2))
    assert store_raw(node.port, [bomb, good, bomb]) == [StoreStatus.OUT_OF_RESOURCES, 0, StoreStatus.OUT_OF_RESOURCES]
    assert _indexed(node.engine) == 1
    assert caplog.text.count("inflates beyond") == 2 and "Traceback" not in caplog.text
    assert c_echo(node.port).echo_status == 0
