"""What every write-back transport shares: the objects to send, the report of a send, its two failures.

C-STORE (:mod:`dicom_node.work.export`) and STOW-RS (:mod:`dicom_node.work.dicomweb`) both take
:class:`ObjectToSend` items and return a :class:`SendReport` (SOP Instance UID → DIMSE status); both raise
:class:`ExportError` when a later attempt may succeed and :class:`ExportRefused` when only a person can fix
what is wrong. The export job's handler turns these into checkpoints, retries and dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SUCCESS = 0x0000
#: Warning statuses that still mean "stored" (coercion, elements discarded, dataset does not match SOP class).
WARNING_STATUSES = frozenset({0xB000, 0xB006, 0xB007})


class ExportError(Exception):
    """Sending failed in a way a later attempt may fix (peer down, busy, out of resources)."""


class ExportRefused(Exception):
    """The peer refused in a way that retrying cannot change (the message says what to fix)."""


@dataclass(frozen=True)
class ObjectToSend:
    """A DICOM file and what the peer must accept for it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


@dataclass
class SendReport:
    """Per-object outcome of a send: SOP Instance UID → status (``None``: not attempted)."""

    statuses: dict[str, int | None] = field(default_factory=dict)
    refused_contexts: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every object was stored (success or warning)."""
        return not self.refused_contexts and all(
            s is not None and (s == SUCCESS or s in WARNING_STATUSES) for s in self.statuses.values()
        )


def describe(path: Path | str) -> ObjectToSend:
    """Read what a file is from its file meta (falls back to the dataset); raises ``ValueError``."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable DICOM file: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None)
    sop_class = getattr(meta, "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID")
    sop_instance = getattr(meta, "MediaStorageSOPInstanceUID", None) or ds.get("SOPInstanceUID")
    if not (ts and sop_class and sop_instance):
        raise ValueError(f"{path} lacks a transfer syntax, SOP class or SOP instance UID in its file meta")
    return ObjectToSend(path, str(sop_class), str(sop_instance), str(ts))
