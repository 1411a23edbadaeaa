"""The C-STORE fast path: C-STORE requests handled on the DUL thread, straight from the P-DATA-TF PDUs.

pynetdicom turns every P-DATA-TF PDU into PDV objects, hands them through its state machine to the DIMSE
provider, decodes the command set into a pydicom ``Dataset``, wakes the association thread, builds an
``Event``, and encodes the response command set with pydicom again; for a 128 KiB image that is about
two thirds of the time a sequential sender waits. Here, on an established association (Sta6), the
:class:`FastStorePath` reads the PDV items itself:

* a message whose command set is a C-STORE-RQ with a dataset, on an accepted presentation context, is
  collected here; when its last dataset fragment arrives the store callback runs (on the DUL thread) and
  the C-STORE-RSP is encoded by hand and sent at once;
* every other PDV (C-ECHO, anything unexpected or malformed) is repacked, in order, into a P-DATA-TF PDU
  for pynetdicom's normal path, which answers it as always.

Association negotiation, release, abort and timers stay pynetdicom's. A-ASSOCIATE, A-RELEASE and A-ABORT
PDUs never come here. DIMSE and PDU notification events are not emitted for fast-path messages.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATASET = 0x0101
PROCESSING_FAILURE = 0x0110
VERIFICATION = "1.2.840.10008.1.1"

#: ``store(assoc, abstract_syntax, transfer_syntax, sop_class_uid, sop_instance_uid, data) -> (status, comment)``
StoreCallback = Callable[[Any, str, str, str, str, bytes], tuple[int, str | None]]


@dataclass
class Command:
    """The fields of a command set the fast path needs."""

    command_field: int | None = None
    message_id: int | None = None
    data_set_type: int | None = None
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


def parse_command(raw: bytes) -> Command:
    """Parse an implicit VR little endian command set (group 0000); raises ``ValueError`` if malformed."""
    cmd = Command()
    pos, end = 0, len(raw)
    while pos < end:
        if end - pos < 8:
            raise ValueError("command set ends inside an element header")
        group, elem, length = struct.unpack_from("<HHL", raw, pos)
        pos += 8
        if group != 0x0000 or pos + length > end:
            raise ValueError("not a command set element, or truncated")
        value = raw[pos : pos + length]
        pos += length
        if elem == 0x0002:
            cmd.sop_class_uid = value.rstrip(b"\x00 ").decode("ascii")
        elif elem == 0x1000:
            cmd.sop_instance_uid = value.rstrip(b"\x00 ").decode("ascii")
        elif elem in (0x0100, 0x0110, 0x0800):
            if length != 2:
                raise ValueError(f"command element (0000,{elem:04X}) is not US")
            (number,) = struct.unpack("<H", value)
            if elem == 0x0100:
                cmd.command_field = number
            elif elem == 0x0110:
                cmd.message_id = number
            else:
                cmd.data_set_type = number
    return cmd


def _element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, elem, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def encode_store_response(context_id: int, cmd: Command, status: int, comment: str | None = None) -> bytes:
    """A whole P-DATA-TF PDU carrying the C-STORE-RSP for ``cmd`` with ``status``."""
    body = b"".join(
        [
            _element(0x0002, _text(cmd.sop_class_uid, b"\x00")),
            _element(0x0100, struct.pack("<H", C_STORE_RSP)),
            _element(0x0120, struct.pack("<H", cmd.message_id or 0)),
            _element(0x0800, struct.pack("<H", NO_DATASET)),
            _element(0x0900, struct.pack("<H", status)),
            *([_element(0x0902, _text(comment[:64], b" "))] if comment else []),
            _element(0x1000, _text(cmd.sop_instance_uid, b"\x00")),
        ]
    )
    command = _element(0x0000, struct.pack("<L", len(body))) + body
    item = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", 0x04, 0x00, len(item)) + item


def pack_pdata(items: list[bytes]) -> bytes:
    """A P-DATA-TF PDU made of already encoded PDV items."""
    body = b"".join(items)
    return struct.pack(">BBL", 0x04, 0x00, len(body)) + body


@dataclass
class FastStorePath:
    """Per-association state of the fast path (one instance per DUL)."""

    store: StoreCallback
    assoc: Any
    send: Callable[[bytes], None]
    _contexts: dict[int, tuple[str, str]] | None = None
    _command_items: list[bytes] = field(default_factory=list)
    _command: bytearray = field(default_factory=bytearray)
    _mode: str = "idle"  # idle | fast | slow-data
    _current: Command | None = None
    _context_id: int = 0
    _data: bytearray = field(default_factory=bytearray)

    def _accepted(self) -> dict[int, tuple[str, str]]:
        """Accepted storage contexts (a C-STORE on the Verification context is pynetdicom's to refuse)."""
        if self._contexts is None:
            self._contexts = {}
            for cx in self.assoc.accepted_contexts:
                if str(cx.abstract_syntax) == VERIFICATION:
                    continue
                ts = cx.transfer_syntax[0] if isinstance(cx.transfer_syntax, list) else cx.transfer_syntax
                self._contexts[int(cx.context_id)] = (str(cx.abstract_syntax), str(ts))
        return self._contexts

    def feed(self, body: bytes) -> bytes | None:
        """Process the body of one P-DATA-TF PDU; returns a PDU for pynetdicom with what it must handle."""
        items: list[tuple[bytes, int, int, memoryview]] = []
        view = memoryview(body)
        pos = 0
        while pos < len(body):
            if len(body) - pos < 6:
                return self._give_up(body)
            (length,) = struct.unpack_from(">L", body, pos)
            if length < 2 or pos + 4 + length > len(body):
                return self._give_up(body)
            items.append((body[pos : pos + 4 + length], body[pos + 4], body[pos + 5], view[pos + 6 : pos + 4 + length]))
            pos += 4 + length
        leftover: list[bytes] = []
        for raw, context_id, header, data in items:
            is_command, is_last = bool(header & 0x01), bool(header & 0x02)
            if self._mode == "fast":
                if is_command or context_id != self._context_id:
                    return self._give_up(body)  # a new command before the dataset ended: not ours to judge
                self._data += data
                if is_last:
                    self._finish()
                continue
            if self._mode == "slow-data":
                leftover.append(raw)
                if not is_command and is_last:
                    self._mode = "idle"
                continue
            if not is_command:  # a dataset fragment without its command: let pynetdicom judge it
                leftover.append(raw)
                continue
            self._command_items.append(raw)
            self._command += data
            if is_last:
                leftover.extend(self._command_complete(context_id))
        return pack_pdata(leftover) if leftover else None

    def _command_complete(self, context_id: int) -> list[bytes]:
        """Decide fast or slow for the message whose command set just completed; returns items for pynetdicom."""
        raw_items, command = self._command_items, bytes(self._command)
        self._command_items, self._command = [], bytearray()
        try:
            cmd = parse_command(command)
        except (ValueError, UnicodeDecodeError):
            return raw_items
        has_dataset = cmd.data_set_type is not None and cmd.data_set_type != NO_DATASET
        if cmd.command_field == C_STORE_RQ and has_dataset and context_id in self._accepted():
            self._mode, self._current, self._context_id = "fast", cmd, context_id
            self._data = bytearray()
            return []
        self._mode = "slow-data" if has_dataset else "idle"
        return raw_items

    def _finish(self) -> None:
        cmd, context_id, data = self._current, self._context_id, bytes(self._data)
        self._mode, self._current, self._data = "idle", None, bytearray()
        assert cmd is not None
        abstract_syntax, transfer_syntax = self._accepted()[context_id]
        try:
            status, comment = self.store(
                self.assoc, abstract_syntax, transfer_syntax, cmd.sop_class_uid, cmd.sop_instance_uid, data
            )
        except Exception:
            logger.exception("C-STORE of SOP instance %s failed", cmd.sop_instance_uid)
            status, comment = PROCESSING_FAILURE, "the node failed to process the request"
        self.send(encode_store_response(context_id, cmd, status, comment))

    def _give_up(self, body: bytes) -> bytes:
        """Something the fast path does not understand: hand the whole PDU (and any buffered command) over."""
        logger.debug("fast path hands a P-DATA-TF PDU to pynetdicom")
        pending, self._command_items, self._command = self._command_items, [], bytearray()
        self._mode, self._current, self._data = "idle", None, bytearray()
        return pack_pdata([*pending, body]) if pending else pack_pdata([body])
