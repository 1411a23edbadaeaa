"""Association policy decisions and the presentation contexts the SCP offers."""

from __future__ import annotations

from pydicom.uid import UID

from dicom_node.core.config import Peer
from dicom_node.intake.scp import (
    CALLED_AE_NOT_RECOGNISED,
    CALLING_AE_NOT_RECOGNISED,
    HOST_NOT_RECOGNISED,
    TRANSFER_SYNTAXES,
    VERIFICATION,
    AssociationPolicy,
    contexts_in_requestor_order,
    storage_contexts,
)
from tests.peers import CT_IMAGE, ENHANCED_MR, SECONDARY_CAPTURE, SEGMENTATION

PEERS = [
    Peer(name="pacs", ae_title="ORTHANC", host="127.0.0.1", port=4242),
    Peer(name="results-only", ae_title="ARCHIVE", host="127.0.0.1", port=104, send_to_us=False, receive_results=True),
    Peer(name="local", ae_title="TOOLS", host="localhost", port=105),
]


def test_policy_decisions() -> None:
    policy = AssociationPolicy(["LAUREL", "LAUREL_LEG"], PEERS)
    accepted = policy.decide("LAUREL_LEG", "ORTHANC", "127.0.0.1")
    assert accepted.rejection is None and accepted.peer == "pacs"
    assert policy.decide("LAUREL ", " ORTHANC", "::ffff:127.0.0.1").peer == "pacs"
    assert policy.decide("SOMEONE", "ORTHANC", "127.0.0.1").rejection == CALLED_AE_NOT_RECOGNISED
    assert policy.decide("LAUREL", "STRANGER", "127.0.0.1").rejection == CALLING_AE_NOT_RECOGNISED
    assert policy.decide("LAUREL", "ARCHIVE", "127.0.0.1").rejection == CALLING_AE_NOT_RECOGNISED
    refused = policy.decide("LAUREL", "ORTHANC", "10.1.2.3")
    assert refused.rejection == HOST_NOT_RECOGNISED and "10.1.2.3" in refused.message
    assert policy.decide("LAUREL", "TOOLS", "127.0.0.1").peer == "local"  # host names are resolved


def test_rejection_codes_follow_ps3_8() -> None:
    assert (CALLED_AE_NOT_RECOGNISED.result, CALLED_AE_NOT_RECOGNISED.source, CALLED_AE_NOT_RECOGNISED.reason) == (
        1,
        1,
        7,
    )
    assert (CALLING_AE_NOT_RECOGNISED.result, CALLING_AE_NOT_RECOGNISED.reason) == (1, 3)
    assert (HOST_NOT_RECOGNISED.result, HOST_NOT_RECOGNISED.reason) == (1, 3)


def test_every_storage_class_with_every_transfer_syntax() -> None:
    contexts = storage_contexts()
    by_class = {str(cx.abstract_syntax): [str(t) for t in cx.transfer_syntax] for cx in contexts}
    for sop_class in (
        VERIFICATION,
        "1.2.840.10008.5.1.4.1.1.4",
        ENHANCED_MR,
        SEGMENTATION,
        CT_IMAGE,
        SECONDARY_CAPTURE,
    ):
        assert sop_class in by_class, UID(sop_class).name
    assert len(by_class) > 150
    assert all(ts == list(TRANSFER_SYNTAXES) for cls, ts in by_class.items() if cls != VERIFICATION)
    assert {UID(t).name for t in TRANSFER_SYNTAXES} >= {
        "Implicit VR Little Endian",
        "Explicit VR Little Endian",
        "Deflated Explicit VR Little Endian",
        "JPEG Baseline (Process 1)",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "JPEG 2000 Image Compression (Lossless Only)",
        "JPEG 2000 Image Compression",
        "RLE Lossless",
        "JPEG-LS Lossless Image Compression",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
    }


def test_contexts_follow_the_requestors_transfer_syntax_order() -> None:
    from pynetdicom.presentation import build_context, negotiate_as_acceptor

    implicit, explicit, big = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"
    jpeg_ls = "1.2.840.10008.1.2.4.80"
    supported = {str(cx.abstract_syntax): tuple(map(str, cx.transfer_syntax)) for cx in storage_contexts()}
    proposed = [
        build_context(ENHANCED_MR, [implicit, "1.2.3.4.5", explicit]),  # an unknown syntax is skipped
        build_context(ENHANCED_MR, [big]),
        build_context(CT_IMAGE, [jpeg_ls, explicit]),
        build_context("1.2.3.999", [explicit]),  # not a SOP class of ours
    ]
    for number, cx in enumerate(proposed):
        cx.context_id = 2 * number + 1
    ours = contexts_in_requestor_order(proposed, supported)
    by_class = {str(cx.abstract_syntax): [str(t) for t in cx.transfer_syntax] for cx in ours}
    assert set(by_class) == {ENHANCED_MR, CT_IMAGE}
    assert by_class[ENHANCED_MR][:3] == [implicit, explicit, big]
    assert sorted(by_class[ENHANCED_MR]) == sorted(supported[ENHANCED_MR])
    accepted, _ = negotiate_as_acceptor(proposed, ours)
    assert [(cx.result, cx.transfer_syntax[0] if cx.result == 0 else None) for cx in accepted] == [
        (0, implicit),
        (0, big),
        (0, jpeg_ls),
        (3, None),  # abstract syntax not supported
    ]
