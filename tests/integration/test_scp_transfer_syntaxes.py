"""Every listed transfer syntax is accepted, stored exactly as received, and decodes on demand."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filereader import read_preamble
from pydicom.uid import JPEG2000, JPEG2000Lossless, RLELossless, generate_uid
from sqlalchemy import select

from dicom_node.core.db import Instance, session_scope
from tests.peers import (
    ENHANCED_MR,
    PEER_ENV,
    make_image,
    make_segmentation,
    require,
    store_datasets,
    store_raw,
    storescu,
)

pytestmark = pytest.mark.peers

# (name, transfer syntax UID, how to make it, lossless, storescu option proposing exactly it or None:
# storescu has no option for JPEG process 14 (non-SV1), which pynetdicom sends byte for byte instead)
CASES = [
    ("implicit", "1.2.840.10008.1.2", ("dcmconv", "+ti"), True, "-xi"),
    ("explicit", "1.2.840.10008.1.2.1", None, True, "-xe"),
    ("big-endian", "1.2.840.10008.1.2.2", ("dcmconv", "+tb"), True, "-xb"),
    ("deflated", "1.2.840.10008.1.2.1.99", ("dcmconv", "+td"), True, "-xd"),
    ("jpeg-baseline", "1.2.840.10008.1.2.4.50", ("dcmcjpeg", "+eb"), False, "-xy"),
    ("jpeg-lossless", "1.2.840.10008.1.2.4.57", ("dcmcjpeg", "+el"), True, None),
    ("jpeg-lossless-sv1", "1.2.840.10008.1.2.4.70", ("dcmcjpeg", "+e1"), True, "-xs"),
    ("jpeg-ls-lossless", "1.2.840.10008.1.2.4.80", ("dcmcjpls", "+el"), True, "-xt"),
    ("jpeg-ls-near-lossless", "1.2.840.10008.1.2.4.81", ("dcmcjpls", "+en"), False, "-xu"),
    ("jpeg2000-lossless", JPEG2000Lossless, "pydicom", True, "-xv"),
    ("jpeg2000", JPEG2000, "pydicom", False, "-xw"),
    ("rle", RLELossless, ("dcmcrle",), True, "-xr"),
]


def _dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a file, without preamble and file meta."""
    from pydicom.filereader import _read_file_meta_info

    with path.open("rb") as f:
        read_preamble(f, False)
        _read_file_meta_info(f)
        return f.read()


def _make(tmp_path: Path, name: str, ts: str, how: Any) -> tuple[Path, np.ndarray]:
    ds = make_image(generate_uid(), generate_uid(), rows=64, columns=64)
    if name == "jpeg-baseline":  # baseline JPEG is 8 bit
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = (np.arange(64 * 64, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
    original = ds.pixel_array.copy()
    source = tmp_path / f"{name}-source.dcm"
    target = tmp_path / f"{name}.dcm"
    if how == "pydicom":
        if ts == JPEG2000:
            ds.compress(ts, j2k_cr=[4])
        else:
            ds.compress(ts)
        ds.save_as(target, enforce_file_format=True)
    elif how is None:
        ds.save_as(target, enforce_file_format=True)
    else:
        ds.save_as(source, enforce_file_format=True)
        exe = require(how[0])
        subprocess.run([exe, *how[1:], str(source), str(target)], check=True, env=PEER_ENV, capture_output=True)
    assert str(dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID) == ts
    return target, original


@pytest.mark.parametrize(("name", "ts", "how", "lossless", "option"), CASES, ids=[c[0] for c in CASES])
def test_transfer_syntax_is_stored_as_received(
    node: Any, tmp_path: Path, name: str, ts: str, how: Any, lossless: bool, option: str | None
) -> None:
    path, original = _make(tmp_path, name, ts, how)
    if option is None:
        assert store_raw(node.port, [path]) == [0]
    else:
        proc = storescu(node.port, [path], extra=[option])
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with session_scope(node.engine) as session:
        instance = session.scalars(select(Instance)).one()
        stored = node.config.node.storage_dir / instance.path
        assert instance.TransferSyntaxUID == ts
    received, sent = _dataset_bytes(stored), _dataset_bytes(path)
    if name == "deflated" and len(sent) % 2:
        sent += b"\x00"  # an odd deflate stream travels padded to even length (PS3.5 A.5)
    assert received == sent  # byte for byte as the sender encoded it
    decoded = dcmread(stored).pixel_array  # decode on demand (pylibjpeg / openjpeg / rle)
    if lossless:
        assert np.array_equal(decoded, original)
    else:
        assert decoded.shape == original.shape
        assert np.abs(decoded.astype(float) - original.astype(float)).mean() < 0.1 * original.max()


def test_enhanced_mr_and_segmentation_are_accepted(node: Any) -> None:
    study_uid = generate_uid()
    multi = make_image(study_uid, generate_uid(), sop_class=ENHANCED_MR, frames=4)
    seg = make_segmentation(study_uid, generate_uid())
    statuses = store_datasets(node.port, [multi, seg])
    assert [int(s.Status) for s in statuses] == [0, 0]
    with session_scope(node.engine) as session:
        by_uid = {i.SOPInstanceUID: i for i in session.scalars(select(Instance))}
    assert by_uid[multi.SOPInstanceUID].SOPClassUID == ENHANCED_MR
    assert dcmread(node.config.node.storage_dir / by_uid[multi.SOPInstanceUID].path).pixel_array.shape == (4, 32, 32)
    assert by_uid[seg.SOPInstanceUID].SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
