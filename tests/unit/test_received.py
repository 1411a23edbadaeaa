"""The cheap parse of received datasets walks every element and refuses what is malformed or mismatched."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from pynetdicom.dsutils import encode

from dicom_node.intake.received import (
    INFLATE_FLOOR,
    DatasetRefused,
    StoreStatus,
    check_instance,
    inflate_limit,
    inspect_dataset,
    is_image_sop_class,
)
from tests.peers import CT_IMAGE, ENHANCED_MR, SEGMENTATION, make_image, make_segmentation

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG = "1.2.840.10008.1.2.2"


def _image(**kwargs: object) -> Dataset:
    return make_image(generate_uid(), generate_uid(), **kwargs)  # type: ignore[arg-type]


def _encoded(ds: Dataset, ts: str) -> bytes:
    implicit, little, deflated = ts == IMPLICIT, ts != BIG, ts == DEFLATED
    data = encode(ds, implicit, little, deflated)
    assert data is not None
    return data


def _check(ds: Dataset, data: bytes, ts: str) -> None:
    header = inspect_dataset(data, ts)
    check_instance(header, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID))


@pytest.mark.parametrize("ts", [EXPLICIT, IMPLICIT, DEFLATED, BIG])
def test_uncompressed_encodings_parse_with_their_index_attributes(ts: str) -> None:
    ds = _image(patient_name="Müller^Jörg", series_description="Thigh T1", body_part="LEG")
    header = inspect_dataset(_encoded(ds, ts), ts)
    assert header.text("SOPInstanceUID") == ds.SOPInstanceUID
    assert header.text("StudyInstanceUID") == ds.StudyInstanceUID
    assert header.text("SeriesInstanceUID") == ds.SeriesInstanceUID
    assert header.text("PatientName") == "Müller^Jörg"
    assert header.text("SeriesDescription") == "Thigh T1"
    assert header.text("BodyPartExamined") == "LEG"
    assert header.text("Modality") == "MR"
    assert header.number("Rows") == 32 and header.number("Columns") == 32
    assert header.number("InstanceNumber") == 1
    assert header.pixel is not None and header.pixel.length == 32 * 32 * 2
    check_instance(header, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID))


@pytest.mark.parametrize("ts", [RLELossless, JPEG2000Lossless])
def test_encapsulated_pixel_data_is_walked_fragment_by_fragment(ts: str) -> None:
    ds = _image()
    ds.compress(ts)
    data = _encoded(ds, EXPLICIT)  # encapsulated data is explicit VR little endian on the wire
    header = inspect_dataset(data, ts)
    assert header.pixel is not None and header.pixel.length is None and header.pixel.fragments >= 1
    _check(ds, data, ts)
    with pytest.raises(DatasetRefused) as info:
        inspect_dataset(data[:-10], ts)  # the sequence delimiter is cut off
    assert info.value.status == StoreStatus.CANNOT_UNDERSTAND


@pytest.mark.parametrize("ts", [EXPLICIT, IMPLICIT])
@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
def test_nested_sequences_are_walked(ts: str, undefined: bool) -> None:
    ds = _image()
    inner = Dataset()
    inner.CodeValue = "123"
    inner.CodingSchemeDesignator = "DCM"
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([inner])
    ds.ContentSequence = Sequence([item, item])
    for element, items in ((ds["ContentSequence"], [item]), (item["ConceptNameCodeSequence"], [inner])):
        element.is_undefined_length = undefined
        for it in items:
            it.is_undefined_length_sequence_item = undefined
    data = _encoded(ds, ts)
    assert (b"\xfe\xff\xdd\xe0" in data) == undefined
    _check(ds, data, ts)
    with pytest.raises(DatasetRefused):
        cut = data.index(b"123")
        inspect_dataset(data[: cut + 1], ts)


@pytest.mark.parametrize("cut", [1, 7, 500, 2048])
def test_truncated_datasets_cannot_be_understood(cut: int) -> None:
    ds = _image()
    data = _encoded(ds, EXPLICIT)
    with pytest.raises(DatasetRefused) as info:
        inspect_dataset(data[:-cut], EXPLICIT)
    assert info.value.status == StoreStatus.CANNOT_UNDERSTAND


def test_garbage_and_corrupt_deflate_cannot_be_understood() -> None:
    with pytest.raises(DatasetRefused) as info:
        inspect_dataset(b"this is not a DICOM dataset, just text", EXPLICIT)
    assert info.value.status == StoreStatus.CANNOT_UNDERSTAND
    data = _encoded(_image(), DEFLATED)
    with pytest.raises(DatasetRefused) as info:
        inspect_dataset(data[: len(data) // 2], DEFLATED)
    assert info.value.status == StoreStatus.CANNOT_UNDERSTAND


def test_image_without_pixel_data_does_not_match_its_sop_class() -> None:
    ds = _image(pixel_data=False)
    with pytest.raises(DatasetRefused, match="without pixel data") as info:
        _check(ds, _encoded(ds, EXPLICIT), EXPLICIT)
    assert info.value.status == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_pixel_data_shorter_than_the_image_does_not_match() -> None:
    ds = _image()
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(DatasetRefused, match="PixelData has 100 bytes") as info:
        _check(ds, _encoded(ds, EXPLICIT), EXPLICIT)
    assert info.value.status == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_sop_class_of_the_request_must_be_the_datasets() -> None:
    ds = _image()
    header = inspect_dataset(_encoded(ds, EXPLICIT), EXPLICIT)
    with pytest.raises(DatasetRefused, match="differs") as info:
        check_instance(header, CT_IMAGE, str(ds.SOPInstanceUID), CT_IMAGE)
    assert info.value.status == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
    with pytest.raises(DatasetRefused, match="SOPInstanceUID differs"):
        check_instance(header, str(ds.SOPClassUID), generate_uid(), str(ds.SOPClassUID))


@pytest.mark.parametrize("uid", ["../../etc", ".hidden", "1.2/3", "x" * 65])
def test_uids_that_would_escape_the_storage_folder_are_refused(uid: str) -> None:
    ds = _image()
    with pytest.warns(UserWarning):
        ds.SeriesInstanceUID = uid
    with pytest.raises(DatasetRefused, match="SeriesInstanceUID is not a valid UID"):
        _check(ds, _encoded(ds, EXPLICIT), EXPLICIT)


def test_enhanced_mr_and_segmentation_are_image_classes_and_accepted() -> None:
    assert is_image_sop_class(ENHANCED_MR) and is_image_sop_class(SEGMENTATION)
    assert not is_image_sop_class("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    multi = _image(sop_class=ENHANCED_MR, frames=3)
    _check(multi, _encoded(multi, EXPLICIT), EXPLICIT)
    seg = make_segmentation(generate_uid(), generate_uid())
    _check(seg, _encoded(seg, EXPLICIT), EXPLICIT)


def test_non_image_classes_need_no_pixel_data() -> None:
    ds = _image(pixel_data=False, sop_class="1.2.840.10008.5.1.4.1.1.88.11")
    _check(ds, _encoded(ds, EXPLICIT), EXPLICIT)


def test_routing_keywords_are_extracted_on_request() -> None:
    ds = _image()
    ds.ProtocolName = "t1_tse_thigh"
    ds.EchoTime = 12.5
    header = inspect_dataset(_encoded(ds, EXPLICIT), EXPLICIT, ["ProtocolName", "EchoTime"])
    assert header.text("ProtocolName") == "t1_tse_thigh"
    assert header.text("EchoTime") == "12.5"


def test_the_inflated_size_is_bounded_by_what_arrived_and_by_the_configured_cap() -> None:
    assert inflate_limit(1 << 20, None) == 4 << 30  # no bound configured (the recovery scan): 4 GiB
    assert inflate_limit(1000, 1 << 30) == INFLATE_FLOOR == 64 << 20  # small datasets: up to 64 MiB
    assert inflate_limit(10 << 20, 1 << 30) == 640 << 20  # 64 times what arrived
    assert inflate_limit(100 << 20, 1 << 30) == 1 << 30  # never more than node.max_inflated_size
    assert inflate_limit(1000, 8 << 20) == 8 << 20


def test_a_deflated_dataset_beyond_its_bound_is_refused_as_out_of_resources() -> None:
    ds = _image(rows=1024, columns=1024)  # 2 MiB of pixel data
    data = _encoded(ds, DEFLATED)
    with pytest.raises(DatasetRefused, match="inflates beyond 1048576 bytes") as info:
        inspect_dataset(data, DEFLATED, max_inflated_size=1 << 20)
    assert info.value.status == StoreStatus.OUT_OF_RESOURCES
    _check(ds, data, DEFLATED)  # the same dataset within the default bound
    assert inspect_dataset(data, DEFLATED, max_inflated_size=4 << 20).number("Rows") == 1024
