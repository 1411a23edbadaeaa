"""Recovery after an unclean stop: index every complete received file that the index lacks.

The store acknowledges an instance after its file is fsync'd in place and its index row is committed; the
store's own index connection commits with ``synchronous=NORMAL`` (see :mod:`dicom_node.intake.store`), so a power
loss may take the last index rows with it while their files are safe on disk. At the next start (no
``.clean-shutdown`` marker) this scan walks ``storage_dir/instances/<StudyInstanceUID>/<SeriesInstanceUID>/`` and
indexes each ``<SOPInstanceUID>.dcm`` that is missing from the index, after the same checks a C-STORE gets.
A file whose name, folders and content disagree is not ours and is left alone; a file that is ours but does
not parse to its end was never acknowledged: it is moved to ``storage_dir/.quarantine/`` (never deleted: a
person can look at it, and a file this version refuses for another reason is not lost).
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from dicom_node.core.db import Instance, Series, session_scope
from dicom_node.intake.received import DatasetRefused, Incoming, check_instance, inspect_dataset

if TYPE_CHECKING:
    from dicom_node.intake.store import Store

logger = logging.getLogger(__name__)

_META_TAGS = {0x00020002: "sop_class", 0x00020003: "sop_instance", 0x00020010: "ts", 0x00020016: "source_ae"}


@dataclass
class RecoveryReport:
    """What the scan did."""

    indexed: int = 0
    removed: int = 0
    skipped: int = 0


def split_part10(raw: bytes) -> tuple[dict[str, str], memoryview]:
    """The file meta values (SOP class/instance, transfer syntax, source AE) and the dataset bytes."""
    if len(raw) < 144 or raw[128:132] != b"DICM":
        raise ValueError("not a DICOM part 10 file")
    meta: dict[str, str] = {}
    pos = 132
    while pos + 8 <= len(raw):
        group, elem = struct.unpack_from("<HH", raw, pos)
        if group != 0x0002:
            break
        vr = raw[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ"):
            (length,) = struct.unpack_from("<L", raw, pos + 8)
            vpos = pos + 12
        else:
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            vpos = pos + 8
        if vpos + length > len(raw):
            raise ValueError("the file meta is truncated")
        key = _META_TAGS.get(group << 16 | elem)
        if key:
            meta[key] = raw[vpos : vpos + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = vpos + length
    if not {"sop_class", "sop_instance", "ts"} <= meta.keys():
        raise ValueError("the file meta lacks the SOP class, SOP instance or transfer syntax")
    return meta, memoryview(raw)[pos:]


def _indexed_in_series(store: Store, series_uid: str) -> set[str]:
    with session_scope(store.engine) as session:
        return set(
            session.scalars(
                select(Instance.SOPInstanceUID)
                .join(Series, Instance.series_id == Series.id)
                .where(Series.SeriesInstanceUID == series_uid)
            )
        )


QUARANTINE_DIR = ".quarantine"


def _quarantine(store: Store, path: Path, why: str) -> None:
    """Move a file the recovery cannot index out of the tree (kept for a person, never deleted)."""
    target = store.storage_dir / QUARANTINE_DIR / path.relative_to(store.instances_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    logger.warning("recovery: %s was never acknowledged (%s); moved to %s", path.name, why, QUARANTINE_DIR)


def recover_unindexed(store: Store) -> RecoveryReport:
    """Index the complete received files the index lacks (run by :meth:`Store.open` after an unclean stop)."""
    report = RecoveryReport()
    if not store.instances_dir.is_dir():
        return report
    for study_dir in sorted(p for p in store.instances_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for series_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
            files = {p.stem: p for p in series_dir.glob("*.dcm")}
            if not files:
                continue
            missing = sorted(set(files) - _indexed_in_series(store, series_dir.name))
            for uid in missing:
                path = files[uid]
                try:
                    meta, data = split_part10(path.read_bytes())
                except (OSError, ValueError):
                    report.skipped += 1
                    continue
                if meta["sop_instance"] != uid:
                    report.skipped += 1  # not a received instance (derived results and the like)
                    continue
                try:
                    header = inspect_dataset(data, meta["ts"])
                    check_instance(header, meta["sop_class"], uid, meta["sop_class"])
                except DatasetRefused as exc:
                    _quarantine(store, path, str(exc))
                    report.removed += 1
                    continue
                if (header.text("StudyInstanceUID"), header.text("SeriesInstanceUID")) != (
                    study_dir.name,
                    series_dir.name,
                ):
                    report.skipped += 1
                    continue
                item = Incoming(
                    sop_class_uid=meta["sop_class"],
                    sop_instance_uid=uid,
                    context_uid=meta["sop_class"],
                    transfer_syntax=meta["ts"],
                    data=data,
                    calling_ae=meta.get("source_ae", ""),
                    called_ae="",
                    association_id=0,
                )
                if store.index_existing(item, header, path):
                    report.indexed += 1
    if report.indexed or report.removed:
        logger.warning(
            "recovery after an unclean stop: %d received files indexed again, %d partial files moved to %s",
            report.indexed,
            report.removed,
            QUARANTINE_DIR,
        )
    return report
