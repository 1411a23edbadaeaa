"""DICOM-SEG writing and reading: round trips, references, draft/approved marking, foreign SEGs, refusals."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_node.dicom.seg import (
    APPROVED_CONTENT_LABEL,
    DRAFT_CONTENT_LABEL,
    build_seg,
    read_seg,
    seg_summary,
    seg_to_bytes,
)
from dicom_node.dicom.volume import InPlaneTransform, SeriesVolume, load_datasets
from models.labels import region_labels
from tests.unit.test_volume import make_series, random_stored, shuffled, to_multiframe


def _labels(vol: SeriesVolume, region: str, seed: int = 0) -> np.ndarray:
    """Blobs of every second label of the region (so some segments stay empty), plus one tiny speck."""
    rng = np.random.default_rng(seed)
    out = np.zeros(vol.shape, dtype=np.uint8)
    nz, ny, nx = vol.shape
    values = [lab.value for lab in region_labels(region)][::2]
    for v in values:
        z0 = int(rng.integers(0, nz - 2))
        y0, x0 = int(rng.integers(0, ny - 12)), int(rng.integers(0, nx - 12))
        out[z0 : z0 + 3, y0 : y0 + 10, x0 : x0 + 9] = v
    out[nz - 1, 0, nx - 1] = values[-1]
    return out


def _roundtrip(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(seg_to_bytes(ds)))


@pytest.fixture(scope="module")
def leg_volume() -> SeriesVolume:
    return load_datasets(shuffled(make_series(random_stored((8, 64, 48)), transform=InPlaneTransform(flip_cols=True))))


def _build(vol: SeriesVolume, labels: np.ndarray, *, draft: bool, seg_type: str = "BINARY", **kw: object) -> Dataset:
    args: dict[str, object] = {
        "draft": draft,
        "algorithm_name": "leg",
        "algorithm_version": 7,
        "operator": None if draft else "Müller^Anna",
        "seg_type": seg_type,
        "series_number": 901,
    }
    args.update(kw)
    return build_seg(vol, labels, "leg", **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
@pytest.mark.parametrize("draft", [True, False], ids=["draft", "approved"])
def test_round_trip_is_exact(leg_volume: SeriesVolume, seg_type: str, draft: bool) -> None:
    labels = _labels(leg_volume, "leg")
    back = _roundtrip(_build(leg_volume, labels, draft=draft, seg_type=seg_type))
    assert back.SegmentationType == seg_type
    out = read_seg(back, leg_volume)
    assert out.dtype == np.uint8
    assert np.array_equal(out, labels)


@pytest.mark.parametrize("draft", [True, False], ids=["draft", "approved"])
def test_marking_of_draft_and_approved(leg_volume: SeriesVolume, draft: bool) -> None:
    back = _roundtrip(_build(leg_volume, _labels(leg_volume, "leg"), draft=draft))
    summary = seg_summary(back)
    assert summary["draft"] is draft
    assert summary["algorithm_name"] == "leg" and summary["algorithm_version"] == "7"
    assert {s["algorithm_name"] for s in summary["segments"]} == {"leg"}
    algo = back.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    if draft:
        assert back.SeriesDescription == "UNREVIEWED AI DRAFT - leg v7"
        assert back.ContentLabel == DRAFT_CONTENT_LABEL
        assert "unreviewed" in back.ContentDescription.lower()
        assert summary["algorithm_type"] == "AUTOMATIC"
        assert summary["operator"] is None
    else:
        assert back.SeriesDescription == "Approved muscle segmentation (leg v7, reviewed by Müller^Anna)"
        assert back.ContentLabel == APPROVED_CONTENT_LABEL
        assert str(back.ContentCreatorName) == "Müller^Anna"
        assert summary["operator"] == "Müller^Anna"
        assert summary["algorithm_type"] == "SEMIAUTOMATIC"
        texts = [
            back.SeriesDescription,
            back.ContentLabel,
            back.ContentDescription,
            str(back.ContentCreatorName),
        ]
        assert not any("draft" in t.lower() for t in texts)


def test_segments_codes_laterality_and_colours(leg_volume: SeriesVolume) -> None:
    back = _roundtrip(_build(leg_volume, _labels(leg_volume, "leg"), draft=True))
    labs = region_labels("leg")
    assert [int(s.SegmentNumber) for s in back.SegmentSequence] == [lab.value for lab in labs]
    for item, lab in zip(back.SegmentSequence, labs, strict=True):
        assert item.SegmentLabel == lab.display_name
        assert item.TrackingID == lab.key
        cat = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (cat.CodeValue, cat.CodingSchemeDesignator) == ("91723000", "SCT")
        typ = item.SegmentedPropertyTypeCodeSequence[0]
        assert (typ.CodeValue, typ.CodingSchemeDesignator, typ.CodeMeaning) == (
            lab.muscle.snomed_code,
            "SCT",
            lab.muscle.snomed_meaning,
        )
        side = {"right": "24028007", "left": "7771000"}[lab.side]
        assert typ.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == side
        region = item.AnatomicRegionSequence[0]
        assert region.CodeValue == codes.SCT.LowerLeg.value
        assert region.AnatomicRegionModifierSequence[0].CodeValue == side
        assert len(item.RecommendedDisplayCIELabValue) == 3
    summary = seg_summary(back)
    assert [s["key"] for s in summary["segments"]] == [lab.key for lab in labs]
    assert [s["side"] for s in summary["segments"]] == [lab.side for lab in labs]


def test_tracking_uid_is_stable_between_draft_and_approved(leg_volume: SeriesVolume) -> None:
    labels = _labels(leg_volume, "leg")
    a = _build(leg_volume, labels, draft=True)
    b = _build(leg_volume, labels, draft=False)
    assert [s.TrackingUID for s in a.SegmentSequence] == [s.TrackingUID for s in b.SegmentSequence]
    assert len({s.TrackingUID for s in a.SegmentSequence}) == len(a.SegmentSequence)


def test_frames_reference_the_source_images(leg_volume: SeriesVolume) -> None:
    import highdicom as hd

    labels = _labels(leg_volume, "leg")
    back = _roundtrip(_build(leg_volume, labels, draft=True))
    summary = seg_summary(back)
    src_uids = leg_volume.source_sop_instance_uids()
    assert summary["referenced_series_uid"] == leg_volume.SeriesInstanceUID
    assert set(summary["referenced_instance_uids"]) == set(src_uids)
    assert back.SeriesInstanceUID != leg_volume.SeriesInstanceUID
    assert back.StudyInstanceUID == leg_volume.StudyInstanceUID
    assert back.FrameOfReferenceUID == leg_volume.FrameOfReferenceUID
    # every frame's derivation points at the source image whose stored frame it segments
    stored = leg_volume.to_source_order(labels)
    by_uid = {uid: i for i, uid in enumerate(src_uids)}
    seg = hd.seg.Segmentation.from_dataset(back)
    for f, item in enumerate(back.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frame = np.asarray(seg.get_stored_frame(f + 1))
        assert np.array_equal(frame.astype(bool), stored[by_uid[ref]] == number)


def test_each_seg_gets_a_new_series(leg_volume: SeriesVolume) -> None:
    labels = _labels(leg_volume, "leg")
    a, b = _build(leg_volume, labels, draft=True), _build(leg_volume, labels, draft=True)
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert int(a.SeriesNumber) == 901


def test_segread_parses_segments_and_operator(leg_volume: SeriesVolume, tmp_path: Path) -> None:
    import highdicom as hd

    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_to_bytes(_build(leg_volume, _labels(leg_volume, "leg"), draft=False)))
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 12
    assert seg.segment_numbers == list(range(1, 13))
    assert seg.get_segment_numbers(tracking_id="soleus_right") == [1]
    assert seg.get_segment_description(7).segment_label == "Soleus (left)"
    assert str(seg.ContentCreatorName) == "Müller^Anna"
    assert seg.get_segment_description(1).algorithm_type.value == "SEMIAUTOMATIC"


def test_empty_labels_still_give_a_valid_seg(leg_volume: SeriesVolume) -> None:
    empty = np.zeros(leg_volume.shape, dtype=np.uint8)
    back = _roundtrip(_build(leg_volume, empty, draft=True))
    assert np.array_equal(read_seg(back, leg_volume), empty)


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_multiframe_source_round_trip(seg_type: str) -> None:
    stored = random_stored((6, 40, 36), seed=21)
    mf = to_multiframe(shuffled(make_series(stored, transform=InPlaneTransform(flip_rows=True)), seed=9))
    vol = load_datasets([mf])
    labels = _labels(vol, "thigh", seed=4)
    back = _roundtrip(
        build_seg(
            vol,
            labels,
            "thigh",
            draft=True,
            algorithm_name="thigh",
            algorithm_version=2,
            seg_type="LABELMAP" if seg_type == "LABELMAP" else "BINARY",
            series_number=902,
        )
    )
    assert seg_summary(back)["referenced_instance_uids"] == [str(mf.SOPInstanceUID)]
    assert np.array_equal(read_seg(back, vol), labels)


def test_phantom_round_trip_if_available(tmp_path: Path) -> None:
    try:
        from models.phantom import PhantomSpec, generate, write_series
    except ImportError:
        pytest.skip("models.phantom (generate, write_series) is not available yet")
    from dicom_node.dicom.volume import load_series

    ph = generate(PhantomSpec(region="thigh", contrast="t1", seed=5, n_slices=6, matrix=128))
    vol = load_series(write_series(ph, tmp_path))
    back = _roundtrip(
        build_seg(
            vol,
            ph.labels,
            "thigh",
            draft=False,
            algorithm_name="thigh",
            algorithm_version=1,
            operator="Rossi^Marco",
            series_number=903,
        )
    )
    assert np.array_equal(read_seg(back, vol), ph.labels)


# ------------------------------------------------------------------------------------------- foreign SEGs


def test_same_geometry_other_series_is_read_by_position(leg_volume: SeriesVolume) -> None:
    """A SEG of a re-sent copy (new UIDs, same grid) is placed by frame positions."""
    labels = _labels(leg_volume, "leg", seed=2)
    copy = make_series(random_stored((8, 64, 48)), transform=InPlaneTransform(flip_cols=True))
    for ds in copy:
        ds.FrameOfReferenceUID = leg_volume.FrameOfReferenceUID
    other = load_datasets(copy)
    assert not set(other.source_sop_instance_uids()) & set(leg_volume.source_sop_instance_uids())
    for seg_type in ("BINARY", "LABELMAP"):
        back = _roundtrip(_build(other, labels, draft=True, seg_type=seg_type))
        assert np.array_equal(read_seg(back, leg_volume), labels)


def test_other_frame_of_reference_is_refused(leg_volume: SeriesVolume) -> None:
    other = load_datasets(make_series(random_stored((8, 64, 48)), transform=InPlaneTransform(flip_cols=True)))
    back = _roundtrip(_build(other, _labels(other, "leg"), draft=True))
    with pytest.raises(ValueError, match="frame of reference"):
        read_seg(back, leg_volume)


def test_foreign_fractional_seg_matched_by_label_and_code(leg_volume: SeriesVolume) -> None:
    """Another tool's FRACTIONAL SEG: one segment named like ours, one coded with a unique SNOMED code."""
    import highdicom as hd

    thigh = load_datasets(make_series(random_stored((6, 32, 32), seed=8)))
    probs = np.zeros((*thigh.shape, 3), dtype=np.float32)
    probs[1:4, 5:15, 5:15, 0] = 0.9  # "Vastus medialis (left)" by name
    probs[1:4, 5:15, 5:15, 0][0, 0, 0] = 0.2  # below 0.5: background
    probs[2:5, 18:28, 18:28, 1] = 1.0  # vastus lateralis, right, by code + laterality only
    probs[0, 0:3, 0:3, 2] = 1.0  # generic "Skeletal muscle" without laterality: ambiguous, ignored
    algo = hd.AlgorithmIdentificationSequence(name="other-ai", family=codes.cid7162.ArtificialIntelligence, version="1")
    vl = hd.seg.SegmentDescription(
        2,
        "VL",
        codes.SCT.AnatomicalStructure,
        hd.sr.CodedConcept("1403006", "SCT", "Vastus lateralis muscle"),
        "AUTOMATIC",
        algo,
    )
    vl.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
        hd.sr.CodedConcept("24028007", "SCT", "Right")
    ]
    descs = [
        hd.seg.SegmentDescription(
            1,
            "Vastus medialis (left)",
            codes.SCT.AnatomicalStructure,
            codes.SCT.SkeletalMuscle,
            "AUTOMATIC",
            algo,
        ),
        vl,
        hd.seg.SegmentDescription(
            3, "muscle", codes.SCT.AnatomicalStructure, codes.SCT.SkeletalMuscle, "AUTOMATIC", algo
        ),
    ]
    seg = hd.seg.Segmentation(
        source_images=thigh.source_images,
        pixel_array=probs,
        segmentation_type="FRACTIONAL",
        segment_descriptions=descs,
        series_instance_uid=generate_uid(),
        series_number=5,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Other",
        manufacturer_model_name="x",
        software_versions="1",
        device_serial_number="1",
    )
    out = read_seg(_roundtrip(seg), thigh)
    expected = np.zeros(thigh.shape, dtype=np.uint8)
    vm_left = next(lab.value for lab in region_labels("thigh") if lab.key == "vastus_medialis_left")
    vl_right = next(lab.value for lab in region_labels("thigh") if lab.key == "vastus_lateralis_right")
    expected[1:4, 5:15, 5:15] = vm_left
    expected[1, 5, 5] = 0
    expected[2:5, 18:28, 18:28] = vl_right
    assert np.array_equal(out, expected)


def test_seg_without_catalogue_segments_is_refused(leg_volume: SeriesVolume, caplog: pytest.LogCaptureFixture) -> None:
    back = _roundtrip(_build(leg_volume, _labels(leg_volume, "leg"), draft=True))
    for item in back.SegmentSequence:
        item.TrackingID = "tumour"
        item.SegmentLabel = "Tumour"
        item.SegmentedPropertyTypeCodeSequence[0].CodeValue = "108369006"
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="no segment"):
        read_seg(back, leg_volume)
    assert "matches no catalogue muscle" in caplog.text


def test_non_seg_dataset_is_refused(leg_volume: SeriesVolume) -> None:
    with pytest.raises(ValueError, match="not a DICOM Segmentation"):
        read_seg(leg_volume.source_images[0], leg_volume)


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        ("small", {}, "shape"),
        ("float", {}, "dtype uint8"),
        ("13", {}, "not labels of this region"),
        ("zeros", {"draft": False, "operator": "  "}, "needs the operator"),
        ("zeros", {"seg_type": "FRACTIONAL"}, "seg_type"),
        ("zeros", {"algorithm_name": ""}, "algorithm_name"),
    ],
    ids=["shape", "dtype", "value", "operator", "seg-type", "algorithm"],
)
def test_bad_input_is_refused(leg_volume: SeriesVolume, labels: str, kwargs: dict, message: str) -> None:
    arr = np.zeros(leg_volume.shape, np.uint8)
    if labels == "small":
        arr = np.zeros((2, 2, 2), np.uint8)
    elif labels == "float":
        arr = np.zeros(leg_volume.shape, np.float32)
    elif labels == "13":
        arr[0, 0, 0] = 13
    args = {"draft": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        _build(leg_volume, arr, **args)


def test_unknown_region_is_refused(leg_volume: SeriesVolume) -> None:
    with pytest.raises(ValueError, match="unknown region"):
        build_seg(
            leg_volume,
            np.zeros(leg_volume.shape, np.uint8),
            "arm",
            draft=True,
            algorithm_name="x",
            algorithm_version=1,
            series_number=1,
        )
