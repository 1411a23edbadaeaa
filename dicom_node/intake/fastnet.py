"""An event-driven pynetdicom association acceptor: the same protocol code, without polling sleeps, bounded.

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

What a peer may cost is bounded here (limits in :mod:`dicom_node.intake.netguard`):

* a PDU's length is checked from its 6-byte header before anything is allocated, and its body is read
  into a buffer that grows with what arrives; a PDU over the limit gets an A-ASSOCIATE-RJ (an
  A-ASSOCIATE-RQ before acceptance) or an A-ABORT, and the connection is closed;
* a peer that sends nothing for ``network_timeout`` in the middle of a PDU (before acceptance: that does
  not complete its A-ASSOCIATE-RQ within the ARTIM time) gets an A-ABORT and its connection is closed at
  once, which frees its association slot; an association idle between PDUs is aborted by pynetdicom's own
  network timeout (which, unlike pynetdicom's own acceptor, is the AE's: ``node.network_timeout``);
* every accepted socket has TCP_NODELAY, TCP keepalive and a send timeout of ``network_timeout``;
* a DIMSE request its presentation context does not carry (a C-FIND on a storage context) is answered
  with status 0211H "unrecognised operation" and logged in one line.

:class:`dicom_node.intake.acceptor.FastRequestHandler` builds these associations for a
``ThreadedAssociationServer``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT, P_DATA
from pynetdicom.transport import AssociationSocket

from dicom_node.intake.faststore import FastStorePath
from dicom_node.intake.netguard import (
    A_ASSOCIATE_RQ_TYPE,
    ABORT_REASON_INVALID_PARAMETER,
    ACCEPTED_STATES,
    FIRST_CHUNK_AFTER_ACCEPTANCE,
    FIRST_CHUNK_BEFORE_ACCEPTANCE,
    P_DATA_TF_TYPE,
    PDU_TOO_LONG_REJECTION,
    PDU_TYPES,
    UNRECOGNISED_OPERATION,
    a_abort_pdu,
    a_associate_rj_pdu,
    operation_name,
    pdu_limit,
    peer_label,
    unexpected_operation_response,
)

logger = logging.getLogger(__name__)

#: The longest either loop sleeps without a wake-up: bounds timer checks (ARTIM, network timeout).
_MAX_WAIT = 0.05
#: ``recv`` flag for a read that must not block (0 where the platform lacks it: we ``select`` first).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class _Stalled(Exception):
    """The peer sent nothing within the time it had."""


class _Interrupted(Exception):
    """The association is being aborted or killed while a PDU was being read."""


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
    """pynetdicom's DUL provider, waiting in ``select`` instead of sleeping, reading PDUs within bounds."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.to_provider_queue = _WakingQueue(self.poke)
        self.event_queue = _WakingQueue(self.poke)
        #: Serialises sends (from the DUL and the association threads) and, on TLS, every use of OpenSSL.
        self._send_lock = threading.RLock()
        #: The C-STORE fast path (:mod:`dicom_node.intake.faststore`), set by the request handler; ``None``: off.
        self.fast_path: FastStorePath | None = None
        #: The P-DATA-TF limit announced to the peer (``node.max_pdu``; 0: no limit), set by the handler.
        self.max_pdu = 0
        #: A PDU is being read: its own deadline applies (:meth:`_await_readable`), not the idle timer.
        self._in_pdu = False

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

    def _is_transport_event(self) -> bool:
        """pynetdicom's, once the state machine has caught up; in Sta13 the connection is closed unread.

        A PDU is read only after every queued event is processed, so its limits are those of the current
        state (the first A-ASSOCIATE-RQ is read in Sta2, after the connection event). In Sta13 our A-ABORT
        or A-RELEASE-RP is out and the association is over: whatever else the peer sends is not read.
        """
        if not self.event_queue.empty():
            return False
        if self.state_machine.current_state != "Sta13":
            return super()._is_transport_event()
        self._close()
        return True

    def idle_timer_expired(self) -> bool:
        """Whether the association has been idle between PDUs for ``network_timeout`` (not while reading one)."""
        return not self._in_pdu and super().idle_timer_expired()

    def _read_pdu_data(self) -> None:
        """Read one PDU within the bounds of :mod:`dicom_node.intake.netguard` and hand it to the state machine.

        On an established association P-DATA-TF PDUs go through the C-STORE fast path first.
        """
        self._in_pdu = True
        try:
            self._read_bounded_pdu()
        finally:
            self._idle_timer.restart()
            self._in_pdu = False

    def _read_bounded_pdu(self) -> None:
        accepted = self.state_machine.current_state in ACCEPTED_STATES
        try:
            header = self._recv_exact(6, accepted)
            if len(header) < 6:
                self.event_queue.put("Evt17")  # transport connection closed
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in PDU_TYPES:
                logger.warning("%s sent an unknown PDU type 0x%02X; aborting", peer_label(self.assoc), pdu_type)
                self.event_queue.put("Evt19")
                return
            limit = pdu_limit(pdu_type, accepted, self.max_pdu)
            if limit is not None and length > limit:
                self._refuse_too_long(pdu_type, length, limit, accepted)
                return
            body = self._recv_exact(length, accepted)
        except _Stalled:
            timeout = self.network_timeout
            self._refuse(
                f"sent nothing for {timeout:g} s in the middle of a PDU; aborted"
                if accepted or timeout is None
                else "did not complete its association request in time; aborted",
                a_abort_pdu(),
            )
            return
        except _Interrupted:
            return  # the reactor sends the queued A-ABORT next
        except OSError:
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        fast = self.fast_path
        if pdu_type != P_DATA_TF_TYPE or fast is None or self.state_machine.current_state != "Sta6":
            self._dispatch(bytes(header) + bytes(body))
            return
        leftover = fast.feed(bytes(body))
        if leftover is not None:
            self._dispatch(leftover)

    def _refuse_too_long(self, pdu_type: int, length: int, limit: int, accepted: bool) -> None:
        if not accepted and pdu_type == A_ASSOCIATE_RQ_TYPE:
            self._refuse(
                f"sent an A-ASSOCIATE-RQ of {length} bytes, more than the {limit} allowed; rejected",
                a_associate_rj_pdu(*PDU_TOO_LONG_REJECTION),
            )
            return
        where = "node.max_pdu" if accepted and pdu_type == P_DATA_TF_TYPE else "the limit before acceptance"
        self._refuse(
            f"sent a PDU (type 0x{pdu_type:02X}) of {length} bytes, more than the {limit} of {where}; aborted",
            a_abort_pdu(ABORT_REASON_INVALID_PARAMETER),
        )

    def _refuse(self, message: str, pdu: bytes) -> None:
        """Log why, send ``pdu`` (A-ASSOCIATE-RJ or A-ABORT), close the connection; the state machine follows.

        The transport-closed event takes every state to Sta1 (AA-4, AA-5 or AR-5), which frees the slot.
        """
        logger.warning("%s %s", peer_label(self.assoc), message)
        sock = self.socket.socket if self.socket is not None else None
        if sock is not None:
            with self._send_lock, contextlib.suppress(OSError):
                sock.sendall(pdu)
        self._close()

    def _close(self) -> None:
        """Close the connection; the transport-closed event (Evt17) follows exactly once."""
        wrapper = self.socket
        if wrapper is not None and wrapper.socket is not None:
            wrapper.close()  # emits Evt17
        else:
            self.event_queue.put("Evt17")

    def _recv_exact(self, nbytes: int, accepted: bool) -> bytearray:
        """Read ``nbytes`` (fewer only if the peer closes); the buffer grows with what actually arrives."""
        wrapper = self.socket
        sock = wrapper.socket if wrapper is not None else None
        if sock is None:
            return bytearray()
        first = FIRST_CHUNK_AFTER_ACCEPTANCE if accepted else FIRST_CHUNK_BEFORE_ACCEPTANCE
        buf = bytearray(min(nbytes, first))
        read = 0
        last_progress = time.monotonic()
        tls = isinstance(sock, ssl.SSLSocket)
        while read < nbytes:
            if read == len(buf):
                buf.extend(bytes(min(nbytes - read, len(buf))))  # double, never past the announced length
            if not _DONTWAIT and not tls:
                self._await_readable(sock, last_progress, accepted)
            with memoryview(buf) as view, view[read:] as target:
                got = self._recv_tls_now(cast(ssl.SSLSocket, sock), target) if tls else self._recv_now(sock, target)
            if got is None:
                self._await_readable(sock, last_progress, accepted)
                continue
            if not got:
                del buf[read:]
                return buf
            read += got
            last_progress = time.monotonic()  # progress: the network timeout counts from the last byte
        return buf

    @staticmethod
    def _recv_now(sock: socket.socket, target: memoryview) -> int | None:
        """Read what has arrived into ``target``; ``None``: nothing yet (0: the peer closed)."""
        try:
            return sock.recv_into(target, 0, _DONTWAIT)
        except BlockingIOError:
            return None

    def _recv_tls_now(self, sock: ssl.SSLSocket, target: memoryview) -> int | None:
        """Decrypt what has arrived into ``target`` without waiting; ``None``: no whole TLS record yet.

        OpenSSL must not be used by two threads at once, so reads take the lock that sends hold; the
        socket is non-blocking only inside it (sends, under the same lock, always find it blocking).
        """
        with self._send_lock:
            sock.setblocking(False)
            try:
                return sock.recv_into(target)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None
            except ssl.SSLZeroReturnError:
                return 0  # close_notify: the peer closed the TLS connection
            finally:
                with contextlib.suppress(OSError):
                    sock.setblocking(True)

    def _await_readable(self, sock: socket.socket, last_progress: float, accepted: bool) -> None:
        """Wait until ``sock`` has data; :class:`_Stalled` when the time is up, :class:`_Interrupted` on abort."""
        timeout = self.network_timeout
        while True:
            remaining = math.inf if timeout is None else last_progress + timeout - time.monotonic()
            if not accepted and self.state_machine.current_state == "Sta2":
                remaining = min(remaining, self.artim_timer.remaining)
            if remaining <= 0:
                raise _Stalled
            readable, _, _ = select.select([sock, self._wake_r], [], [], None if remaining == math.inf else remaining)
            if sock in readable:
                return
            if self._wake_r in readable:
                self._drain_wake()
                if self._kill_thread or self._abort_queued():
                    raise _Interrupted

    def _abort_queued(self) -> bool:
        with self.to_provider_queue.mutex:
            return any(isinstance(p, (A_ABORT, A_P_ABORT)) for p in self.to_provider_queue.queue)

    def _dispatch(self, raw: bytes) -> None:
        """Hand a whole encoded PDU to pynetdicom's state machine, as its own reader would."""
        try:
            pdu, event = self._decode_pdu(bytearray(raw))
        except Exception as exc:
            logger.warning("%s sent a PDU that cannot be decoded (%s); aborting", peer_label(self.assoc), exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def poke(self) -> None:
        """Wake the reactor (something was queued for it)."""
        with contextlib.suppress(OSError):  # closed, or the buffer is full of pokes already
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _wait(self) -> None:
        sock = self.socket.socket if self.socket is not None else None
        try:
            if sock is None or sock.fileno() < 0:
                raise ValueError("no socket")
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already wait in OpenSSL's buffer, which select cannot see
            readable, _, _ = select.select([sock, self._wake_r], [], [], _MAX_WAIT)
        except (OSError, ValueError):
            time.sleep(0.001)
            return
        if self._wake_r in readable:
            self._drain_wake()

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
                        with self._send_lock:
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
        # pynetdicom set its timers on the DUL it made; give ours the AE's network and ACSE (ARTIM) timeouts.
        self.network_timeout = self.network_timeout
        self.acse_timeout = self.acse_timeout
        self.dul.to_user_queue = _WakingQueue(self._wake.set)
        self.dimse.msg_queue = _WakingQueue(self._wake.set)
        self._reactor_checkpoint = _Checkpoint(self._wake)
        self._reactor_checkpoint.set()
        #: Free for the application (the SCP keeps its per-association facts here).
        self.context: dict[str, Any] = {}

    def run_reactor(self) -> None:
        """pynetdicom's acceptor: await the A-ASSOCIATE-RQ, let EVT_REQUESTED judge it, negotiate, serve.

        Unlike pynetdicom's, it stops waiting as soon as the DUL has given up on the connection (a peer
        refused or stalled before its request was complete) instead of after the ACSE timeout.
        """
        if not self._started_dul:
            self.dul.start()
            self._started_dul = True
            self._dul_ready.wait()
        primitive = self._await_request()
        if isinstance(primitive, A_ASSOCIATE):
            self.requestor.primitive = primitive
            evt.trigger(self, evt.EVT_REQUESTED, {})
            if not self.is_aborted and not self.is_rejected:
                self.acse.negotiate_association()
            if self.is_established:
                self._run_reactor()
        else:
            self.kill()
        sock = cast(AssociationSocket, self.dul.socket)
        if self._server is not None and sock.socket is not None:
            self._server.shutdown_request(sock.socket)

    def _await_request(self) -> Any:
        """The first primitive from the DUL, or ``None`` after the ACSE timeout or once the DUL has stopped."""
        timeout = self.acse_timeout
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            primitive = self.dul.receive_pdu(wait=True, timeout=max(0.0, min(0.1, remaining)))
            if primitive is not None or not self.dul.is_alive() or remaining <= 0:
                return primitive

    def _serve(self, msg: Any, context_id: int) -> None:
        """Serve a DIMSE request; one its presentation context does not carry gets status 0211H."""
        context = self._accepted_cx.get(context_id)
        rsp = None if context is None else unexpected_operation_response(msg, str(context.abstract_syntax))
        if context is None or rsp is None:
            self._serve_request(msg, context_id)
            return
        logger.warning(
            "%s: %s on the presentation context of %s refused: unrecognised operation (0x%04X)",
            peer_label(self),
            operation_name(msg),
            UID(str(context.abstract_syntax)).name,
            UNRECOGNISED_OPERATION,
        )
        try:
            self.dimse.send_msg(rsp, context_id)
        except Exception as exc:
            logger.warning("%s: the refusal could not be sent (%s); aborting", peer_label(self), exc)
            self.abort()

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
                self._serve(msg, cast(int, context_id))
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
                logger.warning("%s: nothing received for %s s; aborting", peer_label(self), self.network_timeout)
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
