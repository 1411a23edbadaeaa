"""Interoperability as it really happens: JPEG-LS from DCMTK, whose transfer syntax order wins, operations a
storage context does not carry, and what DCMTK sees at ``node.max_associations``."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    generate_uid,
)
from sqlalchemy import select

from dicom_node.core.db import Instance, session_scope
from dicom_node.dicom.volume import load_series
from tests.peers import PEER_ENV, echoscu, make_image, require, storescu, wait_until, write_study

pytestmark = pytest.mark.peers

VERIFICATION = "1.2.840.10008.1.1"


def _stored(node: Any) -> list[tuple[Path, str]]:
    with session_scope(node.engine) as session:
        root = node.config.node.storage_dir
        return [(root / i.path, str(i.TransferSyntaxUID)) for i in session.scalars(select(Instance))]


# ---------------------------------------------------------------------------------------------- JPEG-LS
@pytest.mark.parametrize(
    ("ts", "dcmcjpls_options", "storescu_option", "max_error"),
    [(JPEGLSLossless, ["+el"], "-xt", 0), (JPEGLSNearLossless, ["+en"], "-xu", 2)],
    ids=["lossless", "near-lossless"],
)
def test_jpeg_ls_compressed_by_dcmtk_is_stored_and_read_as_a_volume(
    node: Any, tmp_path: Path, ts: str, dcmcjpls_options: list[str], storescu_option: str, max_error: int
) -> None:
    study = write_study(tmp_path / "plain", series=1, instances=3, rows=64, columns=64)
    exe = require("dcmcjpls")
    (tmp_path / "jpeg-ls").mkdir()
    compressed = []
    for path in study.paths:
        target = tmp_path / "jpeg-ls" / path.name
        subprocess.run([exe, *dcmcjpls_options, str(path), str(target)], check=True, env=PEER_ENV, capture_output=True)
        compressed.append(target)
    proc = storescu(node.port, compressed, extra=[storescu_option])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = _stored(node)
    assert len(stored) == 3 and {ts_uid for _, ts_uid in stored} == {ts}
    volume = load_series([path for path, _ in stored])
    original = load_series(study.paths)
    assert volume.array.shape == original.array.shape == (3, 64, 64)
    assert np.abs(volume.array - original.array).max() <= max_error  # NEAR = 2 is dcmcjpls's default


# ---------------------------------------------------------------------------------------------- negotiation
@pytest.mark.parametrize(
    ("proposed", "accepted"),
    [
        ([ImplicitVRLittleEndian, ExplicitVRLittleEndian], ImplicitVRLittleEndian),
        ([ExplicitVRLittleEndian, ImplicitVRLittleEndian], ExplicitVRLittleEndian),
        ([ExplicitVRBigEndian, ImplicitVRLittleEndian, ExplicitVRLittleEndian], ExplicitVRBigEndian),
    ],
    ids=["implicit-first", "explicit-first", "big-endian-first"],
)
def test_the_requestors_transfer_syntax_order_wins(node: Any, proposed: list[str], accepted: str) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(MRImageStorage, proposed)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="LAUREL")
    try:
        assert assoc.is_established
        assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [accepted]
    finally:
        assoc.release()


def test_storescu_gets_its_first_transfer_syntax(node: Any, tmp_path: Path) -> None:
    """``+C -xb``: one context per SOP class proposing big endian, then explicit and implicit little endian."""
    study = write_study(tmp_path / "study", series=1, instances=2)
    proc = storescu(node.port, study.paths, extra=["+C", "-xb"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {ts for _, ts in _stored(node)} == {ExplicitVRBigEndian}


# ---------------------------------------------------------------------------------------------- operations
def test_query_retrieve_on_a_storage_context_is_refused_without_a_traceback(
    node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from pynetdicom import AE

    caplog.set_level(logging.INFO)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="LAUREL")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    try:
        assert assoc.is_established
        # pynetdicom sends each request on the context of the "query model" it is given: MR Image Storage
        statuses = [
            [int(status.Status) for status, _ in assoc.send_c_find(query, MRImageStorage)],
            [int(status.Status) for status, _ in assoc.send_c_move(query, "STORESCU", MRImageStorage)],
            [int(status.Status) for status, _ in assoc.send_c_get(query, MRImageStorage)],
        ]
        assert statuses == [[0x0211]] * 3  # Unrecognised Operation
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assert int(assoc.send_c_store(make_image(generate_uid(), generate_uid())).Status) == 0
    finally:
        assoc.release()
    refusals = [r.getMessage() for r in caplog.records if "unrecognised operation" in r.getMessage()]
    assert [message.split(": ")[1].split()[0] for message in refusals] == ["C-FIND-RQ", "C-MOVE-RQ", "C-GET-RQ"]
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


# ---------------------------------------------------------------------------------------------- the limit
def test_dcmtk_at_max_associations_is_rejected_transient_local_limit_exceeded(node_factory: Any, study: Any) -> None:
    from pynetdicom import AE

    node = node_factory(node={"max_associations": 2})
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(VERIFICATION)
    held = [ae.associate("127.0.0.1", node.port, ae_title="LAUREL") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        for proc in (echoscu(node.port), storescu(node.port, study.paths)):
            output = proc.stdout + proc.stderr
            assert proc.returncode != 0
            assert "Result: Rejected Transient, Source: Service Provider (Presentation Related)" in output, output
            assert "Reason: Local Limit Exceeded" in output, output
        assert 'laurel_associations_total{outcome="rejected_limit"} 2.0' in node.metrics.render().decode()
    finally:
        for a in held:
            a.release()
    wait_until(lambda: storescu(node.port, study.paths).returncode == 0, 30, 0.2, "storescu once slots are free")
    assert len(_stored(node)) == len(study.paths)
