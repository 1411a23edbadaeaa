"""The peer bounds: PDU limits, the refusal PDUs, socket options, operations a presentation context carries."""

from __future__ import annotations

import contextlib
import socket
import struct

from pydicom.uid import MRImageStorage
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_MOVE, C_STORE
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ

from dicom_node.intake.netguard import (
    ASSOCIATION_PDU_LIMIT,
    KEEPALIVE_IDLE,
    PDU_SLACK,
    UNRECOGNISED_OPERATION,
    a_abort_pdu,
    a_associate_rj_pdu,
    configure_socket,
    operation_name,
    pdu_limit,
    unexpected_operation_response,
)

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def test_pdu_limits_before_and_after_acceptance() -> None:
    assert ASSOCIATION_PDU_LIMIT == 64 * 1024
    for pdu_type in range(1, 8):
        assert pdu_limit(pdu_type, False, 262_144) == ASSOCIATION_PDU_LIMIT
    assert pdu_limit(0x04, True, 262_144) == 262_144 + PDU_SLACK
    assert pdu_limit(0x04, True, 0) is None  # node.max_pdu 0: no limit on the length, reads still grow
    assert pdu_limit(0x05, True, 262_144) == ASSOCIATION_PDU_LIMIT


def test_refusal_pdus_read_back_as_pynetdicom_decodes_them() -> None:
    rj = A_ASSOCIATE_RJ()
    rj.decode(a_associate_rj_pdu(0x01, 0x02, 0x01))
    assert (rj.result, rj.source, rj.reason_diagnostic) == (1, 2, 1)
    abort = A_ABORT_RQ()
    abort.decode(a_abort_pdu(0x06))
    assert (abort.source, abort.reason_diagnostic) == (2, 6)


def test_accepted_sockets_get_nodelay_keepalive_and_a_send_timeout() -> None:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        stack.enter_context(socket.create_connection(listener.getsockname()))
        accepted, _ = listener.accept()
        stack.enter_context(accepted)
        configure_socket(accepted, 2.5)
        assert accepted.gettimeout() is None
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        raw = accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.calcsize("@ll"))
        assert struct.unpack("@ll", raw) == (2, 500_000)


def _find() -> C_FIND:
    req = C_FIND()
    req.MessageID = 7
    req.AffectedSOPClassUID = MRImageStorage
    req.Priority = 2
    return req


def test_a_storage_context_carries_c_store_only() -> None:
    rsp = unexpected_operation_response(_find(), MRImageStorage)
    assert isinstance(rsp, C_FIND) and rsp.is_valid_response
    assert (rsp.Status, rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID) == (
        UNRECOGNISED_OPERATION,
        7,
        MRImageStorage,
    )
    move = C_MOVE()
    move.MessageID, move.AffectedSOPClassUID, move.Priority, move.MoveDestination = 8, MRImageStorage, 2, "X"
    assert isinstance(unexpected_operation_response(move, MRImageStorage), C_MOVE)
    store = C_STORE()
    store.MessageID, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = 9, MRImageStorage, "1.2.3"
    assert unexpected_operation_response(store, MRImageStorage) is None
    assert operation_name(_find()) == "C-FIND-RQ"


def test_the_verification_context_carries_c_echo_only_and_others_are_not_judged() -> None:
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = 1, VERIFICATION
    assert unexpected_operation_response(echo, VERIFICATION) is None
    store = C_STORE()
    store.MessageID, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = 2, MRImageStorage, "1.2.3"
    refused = unexpected_operation_response(store, VERIFICATION)
    assert isinstance(refused, C_STORE) and refused.Status == UNRECOGNISED_OPERATION
    assert refused.AffectedSOPInstanceUID == "1.2.3"
    assert unexpected_operation_response(_find(), STUDY_ROOT_FIND) is None  # not a context the node offers
