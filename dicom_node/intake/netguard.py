"""What a peer may cost the node: PDU length limits, the refusals the acceptor sends, operations per context.

The acceptor (:mod:`dicom_node.intake.fastnet`) reads every PDU within these bounds:

* **before acceptance** (Sta2/Sta3: the A-ASSOCIATE-RQ and anything a peer sends before the A-ASSOCIATE-AC)
  a PDU may be at most :data:`ASSOCIATION_PDU_LIMIT` (64 KiB; a request with 128 presentation contexts of
  several transfer syntaxes each needs about 40 KiB). A longer A-ASSOCIATE-RQ is rejected
  (:data:`PDU_TOO_LONG_REJECTION`), any other longer PDU gets an A-ABORT;
* **after acceptance** a P-DATA-TF PDU may be at most ``node.max_pdu`` (what the node announced in its
  A-ASSOCIATE-AC) plus :data:`PDU_SLACK` for senders that count headers into the maximum; 0 means no limit
  on the length. Every other PDU is bounded by :data:`ASSOCIATION_PDU_LIMIT`. A longer one gets an A-ABORT.

The length is checked from the 6-byte PDU header before anything is allocated, and the body is read into
a buffer that grows with what actually arrives (:data:`FIRST_CHUNK_BEFORE_ACCEPTANCE` first), so a header
that claims 4 GiB costs nothing. Accepted sockets get TCP_NODELAY, TCP keepalive and a send timeout
(:func:`configure_socket`). A DIMSE request whose operation the presentation context does not carry
(a C-FIND on a storage context) is answered with :data:`UNRECOGNISED_OPERATION` by
:func:`unexpected_operation_response`.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynetdicom.association import Association

logger = logging.getLogger(__name__)

#: The longest PDU a peer may send before its association is accepted, and any non-P-DATA PDU after.
ASSOCIATION_PDU_LIMIT = 64 * 1024
#: A P-DATA-TF PDU may exceed ``node.max_pdu`` by this much (senders that count the headers in).
PDU_SLACK = 1024
#: Before acceptance the read buffer starts this small and grows with what arrives.
FIRST_CHUNK_BEFORE_ACCEPTANCE = 4096
#: After acceptance the read buffer starts at the PDU length up to this size, then grows with what arrives.
FIRST_CHUNK_AFTER_ACCEPTANCE = 1 << 20

#: The PDU types of PS3.8 9.3 (A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT).
PDU_TYPES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07})
A_ASSOCIATE_RQ_TYPE = 0x01
P_DATA_TF_TYPE = 0x04
#: DUL states in which the association has been accepted and not yet ended (PS3.8 9.2).
ACCEPTED_STATES = frozenset({"Sta6", "Sta7", "Sta8", "Sta9", "Sta10", "Sta11", "Sta12"})

#: A-ASSOCIATE-RJ for an over-long A-ASSOCIATE-RQ: rejected-permanent, service-provider (ACSE), no reason.
PDU_TOO_LONG_REJECTION = (0x01, 0x02, 0x01)
#: A-ABORT source: DICOM UL service-provider (initiated abort).
ABORT_SOURCE_PROVIDER = 0x02
#: A-ABORT reasons (source 2): not specified; invalid PDU parameter value (a PDU that is too long).
ABORT_REASON_NOT_SPECIFIED = 0x00
ABORT_REASON_INVALID_PARAMETER = 0x06

#: DIMSE status 0211H "Unrecognised Operation" (PS3.7 C.5): the operation is not one the context carries.
UNRECOGNISED_OPERATION = 0x0211

#: TCP keepalive on accepted sockets: first probe after this many idle seconds, then every interval, and
#: the connection is dropped after that many unanswered probes (about a minute for a vanished peer).
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm: a small PDU (a C-STORE response) leaves at once."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # pragma: no cover - a socket that is not TCP
        logger.debug("TCP_NODELAY not set: %s", exc)


def configure_socket(sock: socket.socket, network_timeout: float | None) -> None:
    """TCP_NODELAY, TCP keepalive and a send timeout on an accepted socket; reads stay blocking.

    Reads are bounded by the acceptor's DUL (:mod:`dicom_node.intake.fastnet`), sends by ``SO_SNDTIMEO``: a
    peer that takes none of our data for ``network_timeout`` seconds breaks the connection.
    """
    set_nodelay(sock)
    sock.settimeout(None)
    options: list[tuple[int, int | None, int]] = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), KEEPALIVE_IDLE),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
    ]
    for level, option, value in options:
        if option is None:
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:  # pragma: no cover - a platform without the option
            logger.debug("socket option %s not set: %s", option, exc)
    if network_timeout:
        seconds = int(network_timeout)
        timeval = struct.pack("@ll", seconds, int((network_timeout - seconds) * 1_000_000))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        except OSError as exc:  # pragma: no cover
            logger.debug("SO_SNDTIMEO not set: %s", exc)


def peer_label(assoc: Association) -> str:
    """``association from 10.1.2.3:40112 (calling 'ORTHANC')``: who a log line is about (no patient data)."""
    requestor = assoc.requestor
    try:
        where = f"{requestor.address}:{requestor.port}"
    except Exception:  # address not known yet
        where = "an unknown address"
    calling = getattr(requestor.primitive, "calling_ae_title", None)
    return f"association from {where}" + (f" (calling {str(calling).strip()!r})" if calling else "")


def pdu_limit(pdu_type: int, accepted: bool, max_pdu: int) -> int | None:
    """The longest PDU of ``pdu_type`` the node reads (``None``: no limit, ``node.max_pdu`` 0)."""
    if accepted and pdu_type == P_DATA_TF_TYPE:
        return None if max_pdu <= 0 else max_pdu + PDU_SLACK
    return ASSOCIATION_PDU_LIMIT


def a_abort_pdu(reason: int = ABORT_REASON_NOT_SPECIFIED) -> bytes:
    """An encoded A-ABORT PDU from the service provider (PS3.8 9.3.8)."""
    return struct.pack(">BBLBBBB", 0x07, 0x00, 4, 0x00, 0x00, ABORT_SOURCE_PROVIDER, reason)


def a_associate_rj_pdu(result: int, source: int, reason: int) -> bytes:
    """An encoded A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0x00, 4, 0x00, result, source, reason)


def _carried_operation(abstract_syntax: str) -> type | None:
    """The one DIMSE request class a presentation context of ``abstract_syntax`` carries (None: not judged)."""
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE
    from pynetdicom.service_class import StorageServiceClass, VerificationServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    service = uid_to_service_class(abstract_syntax)
    if service is VerificationServiceClass:
        return C_ECHO
    if service is StorageServiceClass:
        return C_STORE
    return None


def unexpected_operation_response(msg: Any, abstract_syntax: str) -> Any | None:
    """The failure response to a request that its presentation context does not carry, else ``None``.

    A Verification context carries C-ECHO, a storage context C-STORE; anything else (C-FIND, C-MOVE,
    C-GET, N-...) on them is answered with the same service's response and status 0211H.
    """
    expected = _carried_operation(abstract_syntax)
    if expected is None or isinstance(msg, expected) or not hasattr(msg, "MessageID"):
        return None
    rsp = type(msg)()
    rsp.MessageIDBeingRespondedTo = msg.MessageID
    sop_class = getattr(msg, "AffectedSOPClassUID", None) or getattr(msg, "RequestedSOPClassUID", None)
    if sop_class:
        rsp.AffectedSOPClassUID = sop_class
    sop_instance = getattr(msg, "AffectedSOPInstanceUID", None) or getattr(msg, "RequestedSOPInstanceUID", None)
    if sop_instance and hasattr(type(rsp), "AffectedSOPInstanceUID"):
        rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = UNRECOGNISED_OPERATION
    return rsp


def operation_name(msg: Any) -> str:
    """``C-FIND-RQ`` for a C_FIND request primitive."""
    return f"{type(msg).__name__.replace('_', '-')}-RQ"
