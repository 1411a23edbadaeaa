"""An event-driven pynetdicom association acceptor: the same protocol code, without polling sleeps.

pynetdicom 3.0 runs two polling loops per association, the DUL reactor and the association reactor, each
sleeping ~1 ms whenever it finds nothing to do. Every C-STORE crosses both loops twice (request in,
response out), so a sequential sender waits a few milliseconds per image for nothing. Here the loops wait
on what they are waiting for instead: the DUL thread ``select``s on its socket and a wake-up socket pair
that is poked whenever something is queued for it; the association thread waits on an event set whenever
a DIMSE message or an A-RELEASE/A-ABORT primitive is queued. State machine, PDU and DIMSE code are
pynetdicom's own; only the waiting differs, and a P-DATA response in Sta6 is sent by the thread that
produced it (what the reactor's DT-1 action would do) instead of being handed to the reactor. (The
pynetdicom version is pinned to 3.0.x in pyproject.toml; ``tests/integration/test_scp_*.py`` exercise
this module against DCMTK and Orthanc.)

:class:`FastRequestHandler` builds these associations for a ``ThreadedAssociationServer``, sets
TCP_NODELAY on every accepted socket, reads PDUs with large ``recv_into`` calls and, when the server has a
``fast_store`` callback, routes P-DATA-TF PDUs through the C-STORE fast path (:mod:`dicom_node.faststore`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.faststore import FastStorePath

logger = logging.getLogger(__name__)

#: The longest either loop sleeps without a wake-up: bounds timer checks (ARTIM, network timeout).
_MAX_WAIT = 0.05


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm: a small PDU (a C-STORE response) leaves at once."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # pragma: no cover - a socket that is not TCP
        logger.debug("TCP_NODELAY not set: %s", exc)


class _WakingQueue(queue.Queue):
    """A queue that calls ``notify`` after every ``put``."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _Checkpoint(threading.Event):
    """The reactor's pause checkpoint; clearing it wakes the reactor so it reaches the pause at once."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def clear(self) -> None:
        super().clear()
        self._wake.set()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL provider, waiting in ``select`` instead of sleeping."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.to_provider_queue = _WakingQueue(self.poke)
        self.event_queue = _WakingQueue(self.poke)
        self._send_lock = threading.RLock()
        #: The C-STORE fast path (:mod:`dicom_node.faststore`), set by the request handler; ``None``: off.
        self.fast_path: FastStorePath | None = None

    def send_pdu(self, primitive: Any) -> None:
        """Queue a primitive for the reactor, or send a P-DATA straight away from the caller's thread.

        In Sta6 with nothing queued ahead, a P-DATA request is what DT-1 would do on the reactor thread
        (encode and send a P-DATA-TF, stay in Sta6); doing it here saves a thread hand-off per response.
        """
        if isinstance(primitive, P_DATA):
            with self._send_lock:
                if (
                    self.state_machine.current_state == "Sta6"
                    and self.to_provider_queue.empty()
                    and self.socket is not None
                ):
                    self._send(P_DATA_TF(primitive))
                    return
        super().send_pdu(primitive)

    def _send(self, pdu: Any) -> None:
        with self._send_lock:
            super()._send(pdu)

    def send_raw(self, data: bytes) -> None:
        """Send an encoded PDU from any thread (the fast path's responses)."""
        with self._send_lock:
            if self.socket is not None:
                self.socket.send(data)

    def _read_pdu_data(self) -> None:
        """Read one PDU; on an established association P-DATA-TF goes through the fast path first."""
        fast = self.fast_path
        if fast is None or self.state_machine.current_state != "Sta6":
            super()._read_pdu_data()
            return
        sock = cast(AssociationSocket, self.socket)
        try:
            header = bytes(sock.recv(6))
            if len(header) < 6:
                self.event_queue.put("Evt17")  # transport connection closed
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
                logger.error("unknown PDU type 0x%02X received", pdu_type)
                self.event_queue.put("Evt19")
                return
            body = bytes(sock.recv(length))
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        if pdu_type != 0x04:
            self._dispatch(header + body)
            return
        leftover = fast.feed(body)
        if leftover is not None:
            self._dispatch(leftover)

    def _dispatch(self, raw: bytes) -> None:
        """Hand a whole encoded PDU to pynetdicom's state machine, as its own reader would."""
        try:
            pdu, event = self._decode_pdu(bytearray(raw))
        except Exception as exc:
            logger.error("unable to decode a received PDU: %s", exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def poke(self) -> None:
        """Wake the reactor (something was queued for it)."""
        with contextlib.suppress(OSError):  # closed, or the buffer is full of pokes already
            self._wake_w.send(b"\0")

    def _wait(self) -> None:
        sock = self.socket.socket if self.socket is not None else None
        try:
            if sock is None or sock.fileno() < 0:
                raise ValueError("no socket")
            readable, _, _ = select.select([sock, self._wake_r], [], [], _MAX_WAIT)
        except (OSError, ValueError):
            time.sleep(0.001)
            return
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass

    def kill_dul(self) -> None:
        """Kill the reactor and stop the thread (wakes it)."""
        self._kill_thread = True
        self.poke()

    def stop_dul(self) -> bool:
        """Stop the reactor if in ``Sta1`` (wakes it instead of waiting for its next poll)."""
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.poke()
            while self.is_alive():
                time.sleep(0.0005)
            return True
        return False

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop with the idle sleep replaced by :meth:`_wait`."""
        self._idle_timer.start()
        sock = cast(AssociationSocket, self.socket)
        idle = False
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                    idle = True
                if idle and self.to_provider_queue.empty() and self.event_queue.empty():
                    self._wait()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception as exc:
                    logger.error("exception in the DUL reactor, aborting the association: %s", exc)
                    abort_pdu = A_ABORT_RQ()
                    abort_pdu.source = 0x02
                    abort_pdu.reason_diagnostic = 0x00
                    try:
                        sock.send(abort_pdu.encode())
                    except Exception as send_exc:  # the peer may be gone already
                        logger.debug("A-ABORT not sent: %s", send_exc)
                    self.assoc.is_aborted = True
                    self.assoc.is_established = False
                    self.assoc._kill = True
                    self._kill_thread = True
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue
                self.state_machine.do_action(event)
                idle = False
        finally:
            self._wake_r.close()
            self._wake_w.close()


class EventDrivenAssociation(Association):
    """An acceptor :class:`~pynetdicom.association.Association` whose reactor waits on events."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._wake = threading.Event()
        self.dul = EventDrivenDUL(self)
        self.dul.to_user_queue = _WakingQueue(self._wake.set)
        self.dimse.msg_queue = _WakingQueue(self._wake.set)
        self._reactor_checkpoint = _Checkpoint(self._wake)
        self._reactor_checkpoint.set()
        #: Free for the application (the SCP keeps its per-association facts here).
        self.context: dict[str, Any] = {}

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop, waiting on :attr:`_wake` instead of sleeping 1 ms per turn."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            self._wake.clear()
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                continue
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                logger.debug("association released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                logger.debug("association aborted")
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                logger.warning("network timeout on an association from %s", self.requestor.ae_title)
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return
            self._wake.wait(_MAX_WAIT)


class FastAssociationSocket(AssociationSocket):
    """Reads a PDU with as few ``recv_into`` calls as the kernel allows (pynetdicom reads 4 KiB at a time)."""

    def recv(self, nr_bytes: int) -> bytearray:
        """Read exactly ``nr_bytes`` unless the connection closes first."""
        sock = cast(socket.socket, self.socket)
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        read = 0
        while read < nr_bytes:
            n = sock.recv_into(view[read:], nr_bytes - read)
            if not n:
                view.release()
                del buf[read:]
                return buf
            read += n
        return buf


class FastRequestHandler(RequestHandler):
    """Creates :class:`EventDrivenAssociation` acceptors with TCP_NODELAY sockets."""

    def _create_association(self) -> Association:
        request = cast(socket.socket, self.request)
        set_nodelay(request)
        assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        # pynetdicom counts acceptors by this thread name prefix (maximum_associations).
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = FastAssociationSocket(assoc, client_socket=request)
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # Shared, read-only: pynetdicom deep-copies these per association, which costs ~10 ms for 170 classes.
        assoc.acceptor.supported_contexts = self.server.contexts
        assoc.requestor.address_info = self.remote
        fast_store = getattr(self.server, "fast_store", None)
        if fast_store is not None:
            dul = cast(EventDrivenDUL, assoc.dul)
            dul.fast_path = FastStorePath(fast_store, assoc, dul.send_raw)
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    handler = cast(Any, handler)
                    assoc.bind(event, handler[0], handler[1])
        return assoc
