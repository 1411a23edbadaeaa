"""The C-STORE fast path speaks the same DIMSE as pynetdicom: its responses decode there, and it hands over
everything that is not a C-STORE request on an accepted context."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF

from dicom_node.intake.faststore import FastStorePath, encode_store_response, pack_pdata, parse_command

MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"


@dataclass
class _Context:
    context_id: int
    abstract_syntax: str
    transfer_syntax: list[str]


class _Assoc:
    def __init__(self) -> None:
        self.accepted_contexts = [_Context(1, MR, [EXPLICIT]), _Context(3, "1.2.840.10008.1.1", [EXPLICIT])]


def _request_items(primitive: Any, context_id: int, max_pdu: int = 0) -> list[bytes]:
    """The PDV items pynetdicom itself sends for a DIMSE request."""
    from pynetdicom.dimse import _RQ_TO_MESSAGE

    msg = _RQ_TO_MESSAGE[type(primitive)]()
    msg.primitive_to_message(primitive)
    items = []
    for pdata in msg.encode_msg(context_id, max_pdu):
        for cx, value in pdata.presentation_data_value_list:
            items.append(struct.pack(">LB", len(value) + 1, cx) + value)
    return items


def _store_request(data: bytes, *, message_id: int = 7) -> C_STORE:
    from io import BytesIO

    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = MR
    req.AffectedSOPInstanceUID = generate_uid()
    req.Priority = 2
    req.DataSet = BytesIO(data)
    return req


def _decode_response(pdu: bytes) -> C_STORE:
    decoded = P_DATA_TF()
    decoded.decode(pdu)
    primitive = decoded.to_primitive()
    msg = DIMSEMessage()
    assert msg.decode_msg(primitive)
    rsp = msg.message_to_primitive()
    assert isinstance(rsp, C_STORE)
    return rsp


def test_parse_command_reads_what_pynetdicom_encodes() -> None:
    req = _store_request(b"\x00" * 10, message_id=42)
    command = b"".join(item[6:] for item in _request_items(req, 1)[:1])
    parsed = parse_command(command)
    assert (parsed.command_field, parsed.message_id, parsed.sop_class_uid) == (0x0001, 42, MR)
    assert parsed.sop_instance_uid == req.AffectedSOPInstanceUID and parsed.data_set_type != 0x0101


def test_responses_decode_in_pynetdicom() -> None:
    req = _store_request(b"", message_id=9)
    cmd = parse_command(_request_items(req, 1)[0][6:])
    ok = _decode_response(encode_store_response(1, cmd, 0x0000))
    assert (ok.Status, ok.MessageIDBeingRespondedTo, ok.AffectedSOPClassUID) == (0x0000, 9, MR)
    assert ok.AffectedSOPInstanceUID == req.AffectedSOPInstanceUID and ok.ErrorComment is None
    bad = _decode_response(encode_store_response(1, cmd, 0xA900, "SOPClassUID differs from the request's"))
    assert bad.Status == 0xA900 and bad.ErrorComment == "SOPClassUID differs from the request's"


def test_fragmented_store_is_handled_and_answered() -> None:
    calls: list[tuple[str, str, str, bytes]] = []
    sent: list[bytes] = []

    def store(assoc: Any, abstract: str, ts: str, sop_class: str, sop_instance: str, data: bytes) -> tuple[int, None]:
        calls.append((abstract, ts, sop_class, data))
        return 0, None

    path = FastStorePath(store, _Assoc(), sent.append)
    data = bytes(range(256)) * 40
    req = _store_request(data, message_id=5)
    items = _request_items(req, 1, max_pdu=1024)  # command + 11 dataset fragments
    assert len(items) > 3
    assert path.feed(b"".join(items[:2])) is None  # command and the first fragment in one PDU
    for item in items[2:]:
        assert path.feed(item) is None
    assert calls == [(MR, EXPLICIT, MR, data)]
    rsp = _decode_response(sent[0])
    assert rsp.Status == 0 and rsp.MessageIDBeingRespondedTo == 5


def test_other_messages_and_unknown_contexts_go_to_pynetdicom() -> None:
    sent: list[bytes] = []
    path = FastStorePath(lambda *a: (0, None), _Assoc(), sent.append)
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    echo_items = _request_items(echo, 3)
    assert path.feed(b"".join(echo_items)) == pack_pdata(echo_items)
    unknown = _request_items(_store_request(b"\x01\x02"), 5)  # context 5 was never accepted
    assert path.feed(b"".join(unknown)) == pack_pdata(unknown)
    assert path.feed(b"\x00\x00\x00\x01\x01") == pack_pdata([b"\x00\x00\x00\x01\x01"])  # malformed item
    stored = _request_items(_store_request(b"\x01\x02"), 1)
    assert path.feed(b"".join(stored)) is None and len(sent) == 1  # and the fast path still works


def test_a_failing_store_callback_becomes_a_failure_status() -> None:
    sent: list[bytes] = []

    def broken(*args: Any) -> tuple[int, None]:
        raise RuntimeError("bug")

    path = FastStorePath(broken, _Assoc(), sent.append)
    path.feed(b"".join(_request_items(_store_request(b"\x01\x02"), 1)))
    rsp = _decode_response(sent[0])
    assert rsp.Status == 0x0110 and "failed to process" in str(rsp.ErrorComment)
