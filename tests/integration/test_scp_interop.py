"""Interoperability as it really happens: operations a storage context does not carry."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tests.peers import make_image

pytestmark = pytest.mark.peers

VERIFICATION = "1.2.840.10008.1.1"


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
