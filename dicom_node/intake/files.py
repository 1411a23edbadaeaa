"""Durable file writing for the store: whole writes, fsync of files and folders, and the File Meta
Information group a received dataset is written behind."""

from __future__ import annotations

import os
import struct
from concurrent.futures import Future
from pathlib import Path

from dicom_node.intake.received import Incoming


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte (``os.write`` may write fewer)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def wait_all(futures: list[Future[None]], *, raise_errors: bool = True) -> None:
    """Wait for every future; raise the first error (unless told not to)."""
    first: BaseException | None = None
    for future in futures:
        exc = future.exception()
        if exc is not None and first is None:
            first = exc
    if first is not None and raise_errors:
        raise first


def fsync_file(fd: int | None, path: Path) -> None:
    """fsync an open descriptor, or the file at ``path``."""
    if fd is not None:
        os.fsync(fd)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a folder, so a rename or a new entry in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _pad(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(item: Incoming) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group for ``item`` (explicit VR little endian)."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    body = b"".join(
        [
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", _pad(item.sop_class_uid, b"\x00")),
            _element(0x0002, 0x0003, b"UI", _pad(item.sop_instance_uid, b"\x00")),
            _element(0x0002, 0x0010, b"UI", _pad(item.transfer_syntax, b"\x00")),
            _element(0x0002, 0x0012, b"UI", _pad(str(PYNETDICOM_IMPLEMENTATION_UID), b"\x00")),
            _element(0x0002, 0x0013, b"SH", _pad(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
            _element(0x0002, 0x0016, b"AE", _pad(item.calling_ae, b" ")),
        ]
    )
    group_length = _element(0x0002, 0x0000, b"UL", struct.pack("<L", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body
