"""Uploaded weights: an ``.npz`` of plain numeric arrays, read without ever unpickling.

The upload format (what :mod:`federation.client` writes): a zip made by ``np.savez`` whose members are
``w0000[_name].npy``, ``w0001[_name].npy``, … — one member per weight array of the model, in the model's
weight order.

What an upload may cost is decided before any array data is read (a 0.5 MiB zip may declare gigabytes):

1. the zip's central directory: member names, their count (the base version's, when known) and their
   declared uncompressed sizes (together at most ``max_bytes``);
2. each member's ``.npy`` header (``numpy.lib.format.read_magic`` / ``read_array_header_*``, a few hundred
   bytes): no object, structured or non-float dtypes (so never a pickle), and — against the base version's
   specs — the exact shape and dtype, and a declared member size that is exactly header + data;
3. only then the data, member by member, into arrays of the sizes already checked (``allow_pickle=False``).
"""

from __future__ import annotations

import io
import math
import re
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

MEMBER_RE = re.compile(r"^w(\d{4,6})(?:_[A-Za-z0-9_.:-]{1,200})?\.npy$")
_HEADER_MAX = 65536  # an .npy header (v1/v2) of a plain array is far below this
#: numpy parses an .npy header with ``ast.literal_eval``, which CPython 3.11 (before 3.11.8) cannot run in two
#: threads at once ("SystemError: AST constructor recursion depth mismatch"): the server's upload threads
#: take turns for it. Parsing a header takes microseconds; reading the data is outside the lock.
_AST_LOCK = threading.Lock()


class WeightsError(ValueError):
    """The uploaded weights are unusable; the message says what to fix (HTTP 422)."""


@dataclass(frozen=True)
class _Member:
    index: int
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    header_len: int  # bytes before the data
    fortran: bool  # the data is in Fortran (column-major) order


def read_weights(
    data: bytes | BinaryIO, *, max_bytes: int, specs: Sequence[Sequence[Any]] | None = None
) -> list[np.ndarray]:
    """Parse an uploaded ``.npz`` into arrays in index order; ``WeightsError`` for anything else.

    With ``specs`` (the base version's ``[[shape...], dtype]`` per array), the count, shapes and dtypes are
    checked from the zip directory and the ``.npy`` headers before a byte of array data is read.
    """
    source: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    if isinstance(data, bytes | bytearray) and not data:
        raise WeightsError("the weights file is empty")
    if not zipfile.is_zipfile(source):
        raise WeightsError("weights must be an .npz file (np.savez of plain numeric arrays), not a pickle")
    source.seek(0)
    try:
        with zipfile.ZipFile(source) as zf:
            members = _members(zf, max_bytes=max_bytes, specs=specs)
            return [_read_data(zf, m) for m in members]
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"the .npz is not a readable zip file: {exc}") from exc


def _members(zf: zipfile.ZipFile, *, max_bytes: int, specs: Sequence[Sequence[Any]] | None) -> list[_Member]:
    """The members in index order, every header checked; no array data read."""
    infos = zf.infolist()
    if not infos:
        raise WeightsError("the .npz holds no arrays")
    if specs is not None and len(infos) != len(specs):
        raise WeightsError(f"expected {len(specs)} weight arrays (the base version's), the .npz holds {len(infos)}")
    if sum(i.file_size for i in infos) > max_bytes:
        raise WeightsError(f"the unpacked weights exceed {max_bytes} bytes (declared sizes in the zip)")
    by_index: dict[int, zipfile.ZipInfo] = {}
    for info in infos:
        match = MEMBER_RE.match(info.filename)
        if match is None:
            raise WeightsError(
                f"unexpected member {info.filename[:80]!r}: name the arrays w0000, w0001, … in weight order"
            )
        index = int(match.group(1))
        if index in by_index:
            raise WeightsError(f"weight index {index} appears twice")
        by_index[index] = info
    if sorted(by_index) != list(range(len(by_index))):
        raise WeightsError(f"weight indices must run 0..{len(by_index) - 1} without gaps")
    members = []
    for index in range(len(by_index)):
        member = _header(zf, index, by_index[index])
        if specs is not None:
            _check_spec(member, specs[index])
        members.append(member)
    return members


def _header(zf: zipfile.ZipFile, index: int, info: zipfile.ZipInfo) -> _Member:
    """Read and check one member's ``.npy`` header (and nothing after it)."""
    name = info.filename
    with zf.open(info) as fh:
        try:
            major, minor = np.lib.format.read_magic(fh)
            if (major, minor) not in {(1, 0), (2, 0)}:
                raise WeightsError(f"{name}: unsupported .npy format version {major}.{minor}")
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            with _AST_LOCK:
                shape, fortran, dtype = read_header(fh, max_header_size=_HEADER_MAX)
        except WeightsError:
            raise
        except Exception as exc:  # a malformed header: ValueError, SyntaxError, EOFError, …
            raise WeightsError(f"{name}: not a valid .npy array ({exc})") from exc
        header_len = fh.tell()
    if dtype.hasobject or dtype.fields is not None or dtype.kind != "f":
        raise WeightsError(f"{name}: dtype {dtype} refused; weights must be float arrays (no objects, no pickles)")
    nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
    if info.file_size != header_len + nbytes:
        raise WeightsError(
            f"{name}: the zip declares {info.file_size} bytes but the header describes {header_len + nbytes} "
            f"(shape {list(shape)}, {dtype})"
        )
    return _Member(index, info, tuple(int(n) for n in shape), dtype, header_len, bool(fortran))


def _check_spec(member: _Member, spec: Sequence[Any]) -> None:
    shape, dtype = spec
    if list(member.shape) != list(shape):
        raise WeightsError(
            f"weight {member.index}: shape {list(member.shape)} differs from the base version's {list(shape)}"
        )
    if member.dtype != np.dtype(dtype):
        raise WeightsError(f"weight {member.index}: dtype {member.dtype} differs from the base version's {dtype}")


def _read_data(zf: zipfile.ZipFile, member: _Member) -> np.ndarray:
    """The member's array (its size already checked against the header and the zip directory)."""
    nbytes = math.prod(member.shape) * member.dtype.itemsize
    with zf.open(member.info) as fh:
        try:
            fh.read(member.header_len)  # the header, parsed and checked by _header
            data = fh.read(nbytes)
        except Exception as exc:  # a damaged member: BadZipFile (CRC), zlib.error, OSError, …
            raise WeightsError(f"{member.info.filename}: cannot read the array ({exc})") from exc
    if len(data) != nbytes:
        raise WeightsError(f"{member.info.filename}: truncated array")
    flat = np.frombuffer(data, dtype=member.dtype)
    array = flat.reshape(member.shape, order="F") if member.fortran else flat.reshape(member.shape)
    return np.ascontiguousarray(array)


def weight_specs(weights: Sequence[np.ndarray]) -> list[list[Any]]:
    """``[[shape...], dtype-string]`` for each array: what the registry records per version."""
    return [[list(map(int, w.shape)), np.dtype(w.dtype).str] for w in weights]


def check_weights(weights: Sequence[np.ndarray], specs: Sequence[Sequence[Any]]) -> None:
    """Shapes, dtypes and finiteness against the base version's; ``WeightsError`` says what differs."""
    if len(weights) != len(specs):
        raise WeightsError(f"expected {len(specs)} weight arrays (the base version's), got {len(weights)}")
    for i, (w, (shape, dtype)) in enumerate(zip(weights, specs, strict=True)):
        if list(w.shape) != list(shape):
            raise WeightsError(f"weight {i}: shape {list(w.shape)} differs from the base version's {list(shape)}")
        if np.dtype(w.dtype) != np.dtype(dtype):
            raise WeightsError(f"weight {i}: dtype {w.dtype} differs from the base version's {np.dtype(dtype)}")
        if not np.isfinite(w).all():
            raise WeightsError(f"weight {i}: contains NaN or infinite values")
