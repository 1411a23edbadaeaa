"""What arrived: a cheap parse and the checks of one received encoded dataset, without decoding pixels.

The C-STORE path never builds a full pydicom ``Dataset``: :func:`inspect_dataset` walks the encoded
elements once (every sequence, item and fragment, so a truncated or garbled dataset is caught), keeps the
few attributes the index needs and notes where the pixel data is. :func:`check_instance` then compares the
content with what the C-STORE request claims. Both raise :class:`DatasetRefused` carrying the C-STORE
failure status to answer with.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)


class StoreStatus(IntEnum):
    """C-STORE response statuses the node answers with (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    PROCESSING_FAILURE = 0x0110


class DatasetRefused(ValueError):
    """The node will not store this dataset; ``status`` is the failure status, the message says why."""

    def __init__(self, message: str, status: StoreStatus) -> None:
        super().__init__(message)
        self.status = status


_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_MAX_DEPTH = 64
#: Without a configured bound a deflated dataset may inflate to this (the recovery scan's files).
_MAX_INFLATED = 4 << 30
#: With a configured bound: at most this many times the deflated size, but always up to the floor.
INFLATE_RATIO = 64
INFLATE_FLOOR = 64 << 20

# The attributes the index needs: tag -> (keyword, kind); kinds: uid, text (charset-aware), cs, int (IS), us.
_WANTED: dict[int, tuple[str, str]] = {
    0x00080005: ("SpecificCharacterSet", "cs"),
    0x00080016: ("SOPClassUID", "uid"),
    0x00080018: ("SOPInstanceUID", "uid"),
    0x00080020: ("StudyDate", "cs"),
    0x00080060: ("Modality", "cs"),
    0x00081030: ("StudyDescription", "text"),
    0x0008103E: ("SeriesDescription", "text"),
    0x00100010: ("PatientName", "pn"),
    0x00100020: ("PatientID", "text"),
    0x00180015: ("BodyPartExamined", "cs"),
    0x0020000D: ("StudyInstanceUID", "uid"),
    0x0020000E: ("SeriesInstanceUID", "uid"),
    0x00200011: ("SeriesNumber", "int"),
    0x00200013: ("InstanceNumber", "int"),
    0x00280002: ("SamplesPerPixel", "us"),
    0x00280008: ("NumberOfFrames", "int"),
    0x00280010: ("Rows", "us"),
    0x00280011: ("Columns", "us"),
    0x00280100: ("BitsAllocated", "us"),
}


@dataclass(frozen=True)
class PixelInfo:
    """Where the pixel data element is: its keyword, value length (``None`` when encapsulated)."""

    keyword: str
    length: int | None
    fragments: int = 0


@dataclass(frozen=True)
class DatasetHeader:
    """The index attributes of one encoded dataset and its pixel data element, if any."""

    attributes: dict[str, str | int | None] = field(default_factory=dict)
    pixel: PixelInfo | None = None

    def text(self, keyword: str) -> str | None:
        """A string attribute (``None`` when absent or empty)."""
        value = self.attributes.get(keyword)
        return None if value is None or value == "" else str(value)

    def number(self, keyword: str) -> int | None:
        """An integer attribute (``None`` when absent or not a number)."""
        value = self.attributes.get(keyword)
        return value if isinstance(value, int) else None


class _Walker:
    """Walks an encoded dataset; raises :class:`DatasetRefused` (cannot understand) where it is malformed."""

    def __init__(self, buf: bytes | memoryview, little: bool, wanted: dict[int, tuple[str, str]]) -> None:
        self.buf = buf
        self.wanted = wanted
        self.e = "<" if little else ">"
        self.found: dict[int, tuple[bytes | None, int, int]] = {}
        self.pixel: PixelInfo | None = None

    def fail(self, message: str) -> DatasetRefused:
        return DatasetRefused(message, StoreStatus.CANNOT_UNDERSTAND)

    def dataset(self, pos: int, end: int, implicit: bool, depth: int, in_item: bool) -> int:
        """Walk elements from ``pos`` to ``end`` (or to an item delimiter when ``in_item``)."""
        if depth > _MAX_DEPTH:
            raise self.fail("sequences nested too deeply")
        buf, e = self.buf, self.e
        top = depth == 0
        while pos < end:
            if end - pos < 8:
                raise self.fail(f"dataset ends inside an element header at byte {pos}")
            group, elem = struct.unpack_from(e + "HH", buf, pos)
            tag = group << 16 | elem
            if tag == _ITEM_DELIMITER:
                if not in_item:
                    raise self.fail(f"item delimiter outside an item at byte {pos}")
                return pos + 8
            if group == 0xFFFE:
                raise self.fail(f"unexpected item tag ({group:04X},{elem:04X}) at byte {pos}")
            vr: bytes | None
            if implicit:
                vr = None
                (length,) = struct.unpack_from(e + "L", buf, pos + 4)
                vpos = pos + 8
            else:
                vr = bytes(buf[pos + 4 : pos + 6])
                if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                    raise self.fail(f"element ({group:04X},{elem:04X}) has no valid VR (byte {pos})")
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise self.fail(f"dataset ends inside an element header at byte {pos}")
                    (length,) = struct.unpack_from(e + "L", buf, pos + 8)
                    vpos = pos + 12
                else:
                    (length,) = struct.unpack_from(e + "H", buf, pos + 6)
                    vpos = pos + 8
            if length == _UNDEFINED:
                if tag in _PIXEL_TAGS and vr in (b"OB", b"OW", None) and top:
                    pos, count = self.fragments(vpos, end)
                    self.pixel = PixelInfo(_PIXEL_TAGS[tag], None, count)
                    continue
                if implicit or vr in (b"SQ", b"UN"):
                    pos = self.sequence(vpos, end, implicit or vr == b"UN", depth, None)
                    continue
                raise self.fail(f"element ({group:04X},{elem:04X}) with VR {vr!r} has undefined length")
            if vpos + length > end:
                raise self.fail(
                    f"element ({group:04X},{elem:04X}) needs {length} bytes, {end - vpos} remain: truncated"
                )
            if top:
                if tag in self.wanted:
                    self.found[tag] = (vr, vpos, length)
                elif tag in _PIXEL_TAGS:
                    self.pixel = PixelInfo(_PIXEL_TAGS[tag], length)
            if vr == b"SQ" and length:
                self.sequence(vpos, vpos + length, False, depth, vpos + length)
            pos = vpos + length
        if in_item:
            raise self.fail("an item of undefined length has no item delimiter")
        return pos

    def sequence(self, pos: int, end: int, implicit: bool, depth: int, defined_end: int | None) -> int:
        """Walk the items of a sequence; returns the position after it."""
        buf, e = self.buf, self.e
        while True:
            if defined_end is not None and pos == defined_end:
                return pos
            if end - pos < 8:
                raise self.fail("a sequence ends before its delimiter: truncated")
            group, elem, length = struct.unpack_from(e + "HHL", buf, pos)
            tag = group << 16 | elem
            if tag == _SEQUENCE_DELIMITER:
                if defined_end is not None:
                    raise self.fail("sequence delimiter in a sequence of defined length")
                return pos + 8
            if tag != _ITEM:
                raise self.fail(f"expected an item in a sequence, found ({group:04X},{elem:04X})")
            if length == _UNDEFINED:
                pos = self.dataset(pos + 8, end, implicit, depth + 1, True)
            else:
                if pos + 8 + length > end:
                    raise self.fail("a sequence item is longer than the data: truncated")
                self.dataset(pos + 8, pos + 8 + length, implicit, depth + 1, False)
                pos += 8 + length

    def fragments(self, pos: int, end: int) -> tuple[int, int]:
        """Walk encapsulated pixel data (basic offset table + fragments); returns (position, fragments)."""
        buf, e = self.buf, self.e
        count = 0
        while True:
            if end - pos < 8:
                raise self.fail("encapsulated pixel data ends before its delimiter: truncated")
            group, elem, length = struct.unpack_from(e + "HHL", buf, pos)
            tag = group << 16 | elem
            if tag == _SEQUENCE_DELIMITER:
                if count < 2:
                    raise self.fail("encapsulated pixel data has no fragment")
                return pos + 8, count - 1
            if tag != _ITEM or length == _UNDEFINED:
                raise self.fail("encapsulated pixel data holds something other than fragments")
            if pos + 8 + length > end:
                raise self.fail("a pixel data fragment is longer than the data: truncated")
            pos += 8 + length
            count += 1


def inflate_limit(deflated_size: int, max_inflated_size: int | None) -> int:
    """How large a deflated dataset of ``deflated_size`` bytes may become once inflated.

    ``max_inflated_size`` (``node.max_inflated_size``) caps it; below that cap the limit is
    :data:`INFLATE_RATIO` times the deflated size, or :data:`INFLATE_FLOOR` if that is more (small datasets
    of sparse data, e.g. segmentations, deflate far better than 64:1). ``None``: 4 GiB.
    """
    if max_inflated_size is None:
        return _MAX_INFLATED
    return min(max_inflated_size, max(INFLATE_FLOOR, INFLATE_RATIO * deflated_size))


def _inflate(data: bytes | memoryview, max_inflated_size: int | None) -> bytes:
    limit = inflate_limit(len(data), max_inflated_size)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit)  # grows with the output, stops at the limit
    except zlib.error as exc:
        raise DatasetRefused(f"the deflated dataset is corrupt: {exc}", StoreStatus.CANNOT_UNDERSTAND) from exc
    if inflater.eof:
        return out
    if inflater.unconsumed_tail or len(out) >= limit:
        raise DatasetRefused(
            f"deflated dataset of {len(data)} bytes inflates beyond {limit} bytes, the node's limit",
            StoreStatus.OUT_OF_RESOURCES,
        )
    raise DatasetRefused("the deflated dataset is truncated", StoreStatus.CANNOT_UNDERSTAND)


def _decode_text(raw: bytes, encodings: list[str], pn: bool) -> str:
    from pydicom.charset import decode_bytes

    delimiters = {0x5E, 0x3D} if pn else {0x5C}
    try:
        text = decode_bytes(raw, encodings, delimiters)
    except Exception:  # a broken charset must not lose the image
        text = raw.decode("latin-1")
    return text.rstrip(" \x00")


_NUMERIC = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}


def _wanted(extra_keywords: Iterable[str]) -> dict[int, tuple[str, str]]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    wanted = dict(_WANTED)
    for keyword in extra_keywords:
        tag = tag_for_keyword(keyword)
        if tag is None or tag in wanted:
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr in _NUMERIC:
            kind = "num:" + _NUMERIC[vr]
        elif vr == "PN":
            kind = "pn"
        elif vr in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue
        else:
            kind = "text"
        wanted[tag] = (keyword, kind)
    return wanted


def inspect_dataset(
    data: bytes | memoryview,
    transfer_syntax: str,
    extra_keywords: Iterable[str] = (),
    max_inflated_size: int | None = None,
) -> DatasetHeader:
    """Walk an encoded dataset (without file meta) in ``transfer_syntax`` to its end.

    Returns the index attributes (plus the top-level ``extra_keywords``, as text, for routing rules) and
    the pixel data location; raises :class:`DatasetRefused` with ``CANNOT_UNDERSTAND`` when the bytes
    are not a well-formed dataset (truncated, garbled), and with ``OUT_OF_RESOURCES`` when a deflated
    dataset inflates beyond :func:`inflate_limit`.
    """
    ts = UID(transfer_syntax)
    if ts == DeflatedExplicitVRLittleEndian:
        data = _inflate(data, max_inflated_size)
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian
    wanted = _wanted(extra_keywords) if extra_keywords else _WANTED
    walker = _Walker(data, little, wanted)
    walker.dataset(0, len(data), implicit, 0, False)
    buf, e = walker.buf, walker.e
    charset_raw = walker.found.get(0x00080005)
    encodings = ["iso8859"]
    if charset_raw is not None:
        from pydicom.charset import convert_encodings

        _, vpos, length = charset_raw
        terms = [t.strip() for t in bytes(buf[vpos : vpos + length]).decode("ascii", "replace").split("\\")]
        try:
            encodings = convert_encodings([t for t in terms if t] or ["ISO_IR 6"])
        except Exception:
            encodings = ["iso8859"]
    attributes: dict[str, str | int | None] = {}
    for tag, (_vr, vpos, length) in walker.found.items():
        keyword, kind = wanted[tag]
        raw = bytes(buf[vpos : vpos + length])
        if kind == "us":
            attributes[keyword] = struct.unpack_from(e + "H", raw)[0] if length >= 2 else None
        elif kind.startswith("num:"):
            fmt = kind[4:]
            count = length // struct.calcsize(fmt)
            values = struct.unpack_from(f"{e}{count}{fmt}", raw) if count else ()
            attributes[keyword] = "\\".join(str(v) for v in values)
        elif kind == "uid":
            attributes[keyword] = raw.rstrip(b"\x00 ").decode("ascii", "replace")
        elif kind == "int":
            text = raw.decode("ascii", "replace").strip(" \x00").split("\\")[0]
            try:
                attributes[keyword] = int(text)
            except ValueError:
                attributes[keyword] = None
        elif kind in ("text", "pn"):
            attributes[keyword] = _decode_text(raw, encodings, kind == "pn")
        else:
            attributes[keyword] = raw.decode("ascii", "replace").strip(" \x00")
    return DatasetHeader(attributes, walker.pixel)


@functools.lru_cache(maxsize=512)
def is_image_sop_class(sop_class_uid: str) -> bool:
    """Whether instances of this storage SOP class must carry pixel data."""
    name = UID(sop_class_uid).name
    return "Image Storage" in name or name in {
        "Segmentation Storage",
        "Label Map Segmentation Storage",
        "Parametric Map Storage",
    }


# UIDs become file names: digits and dots as DICOM says, plus letters, '-' and '_' seen in the wild;
# never a leading dot (no '..'), never a path separator.
_UID_CHARS = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}")


def _safe_uid(value: str | None, keyword: str) -> str:
    if not value:
        raise DatasetRefused(f"{keyword} is missing", StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    if not _UID_CHARS.fullmatch(value):
        raise DatasetRefused(f"{keyword} is not a valid UID", StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    return value


def check_instance(header: DatasetHeader, sop_class_uid: str, sop_instance_uid: str, context_uid: str) -> None:
    """Check that the dataset is what the C-STORE request says it is.

    ``sop_class_uid``/``sop_instance_uid`` are the request's Affected SOP Class/Instance UIDs and
    ``context_uid`` the abstract syntax of its presentation context. Raises :class:`DatasetRefused`
    (``DATASET_DOES_NOT_MATCH_SOP_CLASS``) with a reason a sender's log can show.
    """
    mismatch = StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
    ds_class = header.text("SOPClassUID")
    if ds_class is None:
        raise DatasetRefused("SOPClassUID is missing", mismatch)
    if ds_class != sop_class_uid or sop_class_uid != context_uid:
        raise DatasetRefused("SOPClassUID differs from the request's SOP class", mismatch)
    if header.text("SOPInstanceUID") != sop_instance_uid:
        raise DatasetRefused("SOPInstanceUID differs from the request's", mismatch)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        _safe_uid(header.text(keyword), keyword)
    if not is_image_sop_class(ds_class):
        return
    if header.pixel is None:
        raise DatasetRefused("an image SOP class without pixel data", mismatch)
    rows, columns = header.number("Rows"), header.number("Columns")
    if not rows or not columns:
        raise DatasetRefused("an image without Rows or Columns", mismatch)
    pixel = header.pixel
    if pixel.keyword == "PixelData" and pixel.length is not None:
        bits = header.number("BitsAllocated") or 0
        samples = header.number("SamplesPerPixel") or 1
        frames = header.number("NumberOfFrames") or 1
        if bits <= 0:
            raise DatasetRefused("an image without BitsAllocated", mismatch)
        needed = (rows * columns * samples * frames * bits + 7) // 8
        if pixel.length < needed:
            raise DatasetRefused(f"PixelData has {pixel.length} bytes, the image needs {needed}", mismatch)


@dataclass(frozen=True)
class Incoming:
    """One C-STORE request as received: the encoded dataset (without file meta) and where it came from."""

    sop_class_uid: str
    sop_instance_uid: str
    context_uid: str
    transfer_syntax: str
    data: bytes | memoryview
    calling_ae: str
    called_ae: str
    association_id: int
    implementation_uid: str = ""
    implementation_version: str = ""
    #: Bound on a deflated dataset once inflated (``node.max_inflated_size``); ``None``: the parser's default.
    max_inflated_size: int | None = None
