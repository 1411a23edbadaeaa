"""DICOM-SEG writing and reading for muscle label volumes (highdicom).

Writing (:func:`build_seg`): one segment per label of the region's catalogue (``models.labels``), with
segment number == label value (the catalogue's values are ``1..2n`` without gaps, so numbering is stable
across drafts, corrections and sites). Segments the model did not find stay described but have no frames.
Each segment carries

* SegmentedPropertyCategory = SCT 91723000 "Anatomical Structure" (DICOM CID 7150),
* SegmentedPropertyType = the muscle's SNOMED CT code, with SegmentedPropertyTypeModifierCodeSequence =
  SCT 24028007 "Right" / 7771000 "Left",
* AnatomicRegionSequence = SCT 30021000 "Lower leg" / 68367000 "Thigh" with the same laterality modifier,
* SegmentLabel = human name ("Soleus (right)"), TrackingID = label key ("soleus_right"), TrackingUID derived
  from StudyInstanceUID + key (stable between the draft and the approved SEG of one study),
* RecommendedDisplayCIELabValue from the catalogue colour, algorithm identification = model name + version.

A model created from a site's own labels (``laurel model create``, any anatomy) names its segments from its
package's label table instead: its SNOMED CT codes (SCT 123037004 "Body structure" where a label has none),
laterality only for sided labels, no AnatomicRegionSequence or BodyPartExamined for a region outside the
catalogue.

Drafts: SegmentAlgorithmType AUTOMATIC, SeriesDescription "UNREVIEWED AI DRAFT - <model> v<version>",
ContentLabel "AIDRAFT". Approved: SEMIAUTOMATIC, ContentCreatorName = operator, ContentLabel "MUSCLES", no
"draft" anywhere. Frames reference the source images (highdicom derives this from ``source_images``).

Reading (:func:`read_seg`) maps any BINARY / LABELMAP / FRACTIONAL SEG back onto a :class:`SeriesVolume` grid,
by referenced SOP instances / frames where it references the series, else by frame positions.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.dicom.volume import SeriesVolume, reorientation
from models.labels import Label, region_labels

if TYPE_CHECKING:
    import highdicom as hd

log = logging.getLogger(__name__)

SegType = Literal["BINARY", "LABELMAP"]

DRAFT_CONTENT_LABEL = "AIDRAFT"
APPROVED_CONTENT_LABEL = "MUSCLES"
DRAFT_CREATOR = "LAUREL AI^UNREVIEWED DRAFT"
ANATOMICAL_STRUCTURE = ("91723000", "SCT", "Anatomical Structure")  # DICOM CID 7150
SIDE_CODES = {"right": ("24028007", "SCT", "Right"), "left": ("7771000", "SCT", "Left")}
REGION_CODES = {"leg": ("30021000", "SCT", "Lower leg"), "thigh": ("68367000", "SCT", "Thigh")}
BODY_PART = {"leg": "LEG", "thigh": "THIGH"}
BODY_STRUCTURE = ("123037004", "SCT", "Body structure")  # the type of a label without a SNOMED CT code


@dataclass(frozen=True)
class SegmentDef:
    """What one segment is: label value, key (TrackingID), name (SegmentLabel), SNOMED CT code, colour, side."""

    value: int
    key: str
    name: str
    code: str | None
    meaning: str | None
    colour: tuple[int, int, int]
    side: str | None

    @classmethod
    def of_label(cls, lab: Label) -> SegmentDef:
        """A catalogue label."""
        m = lab.muscle
        return cls(lab.value, lab.key, lab.display_name, m.snomed_code, m.snomed_meaning, m.colour, lab.side)

    @classmethod
    def of_table(cls, row: Mapping[str, Any]) -> SegmentDef:
        """A row of a model package's label table (``value, key, name, snomed_code, snomed_meaning, colour,
        side``): any label set, not only the catalogue's."""
        colour = tuple(int(c) for c in row["colour"])
        side = row.get("side") if row.get("side") in SIDE_CODES else None
        return cls(
            int(row["value"]),
            str(row["key"]),
            str(row["name"]),
            str(row["snomed_code"]) if row.get("snomed_code") else None,
            str(row["snomed_meaning"]) if row.get("snomed_meaning") else None,
            (colour[0], colour[1], colour[2]),
            side,
        )


_LO_MAX = 64


def _code(value: tuple[str, str, str]) -> Any:
    from pydicom.sr.coding import Code

    return Code(value[0], value[1], value[2])


def _lo(text: str) -> str:
    """Fit a string into a DICOM LO value: at most 64 bytes once encoded (validators count bytes of UTF-8)."""
    if len(text.encode("utf-8")) <= _LO_MAX:
        return text
    cut = text
    while len(cut.encode("utf-8")) > _LO_MAX - 3:
        cut = cut[:-1]
    return cut + "..."


def draft_series_description(algorithm_name: str, algorithm_version: str) -> str:
    """SeriesDescription of a draft SEG."""
    return _lo(f"UNREVIEWED AI DRAFT - {algorithm_name} v{algorithm_version}")


def approved_series_description(algorithm_name: str, algorithm_version: str, operator: str) -> str:
    """SeriesDescription of an approved SEG (never contains the word draft)."""
    return _lo(f"Approved muscle segmentation ({algorithm_name} v{algorithm_version}, reviewed by {operator})")


#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the source images.
#: Senders omit them now and then (they must be present, may be empty); the SEG then carries them empty.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def with_type2_defaults(ds: Dataset) -> Dataset:
    """``ds``, or a shallow copy of it with the copied Type 2 attributes it lacks present and empty."""
    missing = [keyword for keyword in _TYPE2_COPIED if keyword not in ds]
    if not missing:
        return ds
    copy = Dataset(ds)
    if hasattr(ds, "file_meta"):
        copy.file_meta = ds.file_meta
    for keyword in missing:
        setattr(copy, keyword, "")
    return copy


def build_seg(
    volume: SeriesVolume,
    labels: np.ndarray,
    region: str,
    *,
    draft: bool,
    algorithm_name: str,
    algorithm_version: str | int,
    operator: str | None = None,
    seg_type: SegType = "BINARY",
    series_number: int,
    instance_number: int = 1,
    manufacturer: str = "Laurel",
    manufacturer_model_name: str = "Laurel node",
    software_versions: str = "0.1.0",
    device_serial_number: str = "0",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    label_table: Sequence[Mapping[str, Any]] | None = None,
) -> hd.seg.Segmentation:
    """Build a draft or approved DICOM-SEG of ``labels`` (uint8 ``(z, y, x)`` on ``volume``'s grid).

    ``label_table`` (a package's ``labels``) describes the segments of a model outside the catalogue (any
    anatomy); a catalogue region (leg, thigh) always uses the catalogue's labels. A label without a SNOMED CT code is
    typed SCT 123037004 "Body structure" and named by its SegmentLabel.
    Raises ``ValueError`` with what to fix for a wrong shape, dtype or label value, a missing operator on an
    approved SEG, an unknown region or a catalogue entry without a SNOMED code.
    """
    import highdicom as hd

    if label_table is not None and region not in REGION_CODES:
        labs = [SegmentDef.of_table(row) for row in label_table]
    else:  # the catalogue's current names, codes and colours; ValueError for an unknown region
        labs = [SegmentDef.of_label(lab) for lab in region_labels(region)]
    _validate_labels(volume, labels, labs)
    if seg_type not in ("BINARY", "LABELMAP"):
        raise ValueError(f"seg_type must be 'BINARY' or 'LABELMAP', not {seg_type!r}")
    if not algorithm_name:
        raise ValueError("algorithm_name is required (the model name)")
    version = str(algorithm_version)
    operator = (operator or "").strip() or None
    if not draft and operator is None:
        raise ValueError("an approved SEG needs the operator who reviewed it")

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=_code(("123110", "DCM", "Artificial Intelligence")),
        version=version,
        parameters={"review": "unreviewed draft" if draft else "reviewed and approved"},
    )
    algorithm_type = "AUTOMATIC" if draft else "SEMIAUTOMATIC"
    descriptions = [_segment_description(lab, region, volume, algorithm, algorithm_type) for lab in labs]

    frames = volume.to_source_order(labels)
    if draft:
        description = draft_series_description(algorithm_name, version)
        content_description = "Unreviewed AI draft: not yet checked by a person"
        content_label = DRAFT_CONTENT_LABEL
        creator = DRAFT_CREATOR
    else:
        creator = operator or ""  # checked above: approved SEGs always have an operator
        description = approved_series_description(algorithm_name, version, creator)
        content_description = _lo(f"Muscle segmentation reviewed and approved by {creator}")
        content_label = APPROVED_CONTENT_LABEL
    seg = hd.seg.Segmentation(
        source_images=[with_type2_defaults(ds) for ds in volume.source_images],
        pixel_array=frames,
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
        content_description=content_description,
        content_creator_name=creator,
        content_label=content_label,
        series_description=description,
        omit_empty_frames=bool(frames.any()),
    )
    seg.SpecificCharacterSet = "ISO_IR 192"  # descriptions and operator names may hold non-ASCII characters
    if region in BODY_PART:
        seg.BodyPartExamined = BODY_PART[region]
    return seg


def _validate_labels(volume: SeriesVolume, labels: np.ndarray, labs: Sequence[SegmentDef]) -> None:
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8:
        raise ValueError("labels must be a numpy array of dtype uint8")
    if labels.shape != volume.shape:
        raise ValueError(f"labels have shape {labels.shape}, the series volume has shape {volume.shape} (z, y, x)")
    allowed = np.zeros(256, dtype=bool)
    allowed[0] = True
    allowed[[lab.value for lab in labs]] = True
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    bad = [int(v) for v in present if not allowed[v]]
    if bad:
        raise ValueError(f"labels contain values {bad} that are not labels of this region (0..{len(labs)})")
    for lab in labs:
        if lab.code is not None and not lab.code.isdigit():
            raise ValueError(f"the SNOMED CT code {lab.code!r} of label {lab.key} is not a code")


def _segment_description(
    lab: SegmentDef, region: str, volume: SeriesVolume, algorithm: Any, algorithm_type: str
) -> hd.seg.SegmentDescription:
    import highdicom as hd

    kind = (lab.code, "SCT", _lo(lab.meaning or lab.name)) if lab.code else BODY_STRUCTURE
    desc = hd.seg.SegmentDescription(
        segment_number=lab.value,
        segment_label=_lo(lab.name),
        segmented_property_category=_code(ANATOMICAL_STRUCTURE),
        segmented_property_type=_code(kind),
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm,
        tracking_uid=generate_uid(entropy_srcs=[volume.StudyInstanceUID, lab.key]),
        tracking_id=_lo(lab.key),
        anatomic_regions=[_code(REGION_CODES[region])] if region in REGION_CODES else None,
        display_color=hd.color.CIELabColor.from_rgb(*lab.colour),
    )
    if lab.side is not None:
        side = hd.sr.CodedConcept.from_code(_code(SIDE_CODES[lab.side]))
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [side]
        if region in REGION_CODES:
            desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
                hd.sr.CodedConcept.from_code(_code(SIDE_CODES[lab.side]))
            ]
    return desc


def reference_predecessor(seg: Dataset, previous: Dataset) -> None:
    """Make an amended SEG name the approved SEG it supersedes: the previous SEG joins the Common Instance
    Reference (ReferencedSeriesSequence), and the ContentDescription says so."""
    from pydicom.dataset import Dataset as PlainDataset
    from pydicom.sequence import Sequence

    item = PlainDataset()
    item.SeriesInstanceUID = previous.SeriesInstanceUID
    ref = PlainDataset()
    ref.ReferencedSOPClassUID = previous.SOPClassUID
    ref.ReferencedSOPInstanceUID = previous.SOPInstanceUID
    item.ReferencedInstanceSequence = Sequence([ref])
    seg.ReferencedSeriesSequence.append(item)
    seg.ContentDescription = "Amended: supersedes an earlier approved SEG"


def seg_to_bytes(ds: Dataset) -> bytes:
    """Encode a SEG (or any dataset with file meta) as a DICOM Part 10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# reading


def _as_segmentation(ds: Dataset) -> hd.seg.Segmentation:
    import highdicom as hd

    if isinstance(ds, hd.seg.Segmentation):
        return ds
    if str(ds.get("SOPClassUID", "")) not in ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"):
        raise ValueError("the dataset is not a DICOM Segmentation")
    return hd.seg.Segmentation.from_dataset(ds, copy=True)


def _item_code(item: Dataset, keyword: str) -> tuple[str, str] | None:
    seq = item.get(keyword)
    if not seq:
        return None
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _segment_side(item: Dataset) -> str | None:
    """Laterality of a segment from the type modifier, else the anatomic region modifier."""
    by_code = {v[0]: side for side, v in SIDE_CODES.items()}
    for seq_kw, mod_kw in (
        ("SegmentedPropertyTypeCodeSequence", "SegmentedPropertyTypeModifierCodeSequence"),
        ("AnatomicRegionSequence", "AnatomicRegionModifierSequence"),
    ):
        seq = item.get(seq_kw)
        if seq and mod_kw in seq[0]:
            for mod in seq[0][mod_kw]:
                side = by_code.get(str(mod.get("CodeValue", "")))
                if side:
                    return side
    return None


def _all_labels(region: str | None) -> list[tuple[str, Label]]:
    regions = [region] if region else ["leg", "thigh"]
    return [(r, lab) for r in regions for lab in region_labels(r)]


def _segment_label_values(seg: Dataset, region: str | None) -> dict[int, int]:
    """``{segment number: label value}`` for the segments that match the catalogue."""
    candidates = _all_labels(region)
    by_key = {lab.key: (r, lab) for r, lab in candidates}
    by_name = {lab.display_name.lower(): (r, lab) for r, lab in candidates}
    by_code: dict[tuple[str, str | None], list[tuple[str, Label]]] = {}
    for r, lab in candidates:
        by_code.setdefault((lab.muscle.snomed_code, lab.side), []).append((r, lab))

    matched: dict[int, tuple[str, Label]] = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if number == 0:  # the background segment of a LABELMAP SEG
            continue
        hit = by_key.get(str(item.get("TrackingID", "")))
        hit = hit or by_key.get(str(item.get("SegmentLabel", "")))
        hit = hit or by_name.get(str(item.get("SegmentLabel", "")).lower())
        if hit is None:
            code = _item_code(item, "SegmentedPropertyTypeCodeSequence")
            if code is not None and code[1] in ("SCT", "SRT"):
                options = by_code.get((code[0], _segment_side(item)), [])
                if len(options) == 1:
                    hit = options[0]
        if hit is None:
            log.warning("segment %d (%s) matches no catalogue muscle; ignored", number, item.get("SegmentLabel"))
            continue
        matched[number] = hit
    regions = {r for r, _ in matched.values()}
    if len(regions) > 1:
        raise ValueError("the SEG mixes leg and thigh muscles; pass region= to choose one")
    return {number: lab.value for number, (_, lab) in matched.items()}


def read_seg(ds: Dataset, volume: SeriesVolume, *, region: str | None = None) -> np.ndarray:
    """Map a SEG (BINARY, LABELMAP or FRACTIONAL; ours or another tool's) to a uint8 label volume.

    Segments are matched to catalogue labels by TrackingID / SegmentLabel key, by the human label, or by
    SNOMED type code + laterality when that is unambiguous; unmatched segments are ignored with a warning.
    Pixels are taken by referenced source instances/frames, else by frame positions on the volume's grid.
    Raises ``ValueError`` when nothing can be mapped.
    """
    seg = _as_segmentation(ds)
    mapping = _segment_label_values(seg, region)
    if not mapping:
        raise ValueError("no segment of the SEG matches a muscle of the catalogue")
    labels = _labels_by_reference(seg, volume, mapping)
    if labels is not None:
        return labels
    return _labels_by_position(seg, volume, mapping)


def _referenced_instances(seg: Dataset) -> set[str]:
    uids: set[str] = set()
    for series in seg.get("ReferencedSeriesSequence", []):
        for inst in series.get("ReferencedInstanceSequence", []):
            uids.add(str(inst.ReferencedSOPInstanceUID))
    return uids


def _labels_by_reference(seg: hd.seg.Segmentation, volume: SeriesVolume, mapping: dict[int, int]) -> np.ndarray | None:
    """Labels taken through the frames' references to the volume's source images; None if not referenced."""
    if not set(volume.source_sop_instance_uids()) & _referenced_instances(seg):
        return None
    numbers = sorted(mapping)

    def get(combine: bool) -> np.ndarray:
        kwargs: dict[str, Any] = {
            "segment_numbers": numbers,
            "combine_segments": combine,
            "assert_missing_frames_are_empty": True,
        }
        if volume.is_multiframe:
            return np.asarray(
                seg.get_pixels_by_source_frame(
                    source_sop_instance_uid=volume.source_sop_instance_uids()[0],
                    source_frame_numbers=list(range(1, len(volume.source_z) + 1)),
                    **kwargs,
                )
            )
        return np.asarray(
            seg.get_pixels_by_source_instance(source_sop_instance_uids=volume.source_sop_instance_uids(), **kwargs)
        )

    try:
        if str(seg.SegmentationType) != "FRACTIONAL":
            try:
                combined = get(True)  # (frames, rows, cols) of segment numbers
            except RuntimeError:  # overlapping segments: fall through to the stacked form
                pass
            else:
                lut = np.zeros(max(numbers) + 1, dtype=np.uint8)
                for number, value in mapping.items():
                    lut[number] = value
                return volume.from_source_order(lut[combined.astype(np.int64)])
        stacked = get(False)  # (frames, rows, cols, segments), values 0..1
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        log.info("SEG frames cannot be taken by reference (%s); using frame positions", exc)
        return None
    std = np.stack([volume.from_source_order(stacked[..., j]) for j in range(len(numbers))], axis=0)
    return _combine(std, numbers, mapping, volume)


def _combine(stack: np.ndarray, numbers: list[int], mapping: dict[int, int], volume: SeriesVolume) -> np.ndarray:
    """``stack`` is (segments, z, y, x) of values in 0..1; later segments win on overlap (logged)."""
    out = np.zeros(volume.shape, dtype=np.uint8)
    overlap = 0
    for j, number in enumerate(numbers):
        mask = stack[j] >= 0.5
        overlap += int(np.count_nonzero(out[mask]))
        out[mask] = mapping[number]
    if overlap:
        log.warning("SEG segments overlap in %d voxels; the later segment was kept", overlap)
    return out


def _labels_by_position(seg: hd.seg.Segmentation, volume: SeriesVolume, mapping: dict[int, int]) -> np.ndarray:
    """Place each SEG frame on the volume grid by its plane position (same pixel grid required)."""
    seg_for = seg.get("FrameOfReferenceUID")
    if seg_for and volume.FrameOfReferenceUID and str(seg_for) != volume.FrameOfReferenceUID:
        raise ValueError("the SEG neither references this series nor shares its frame of reference")
    shared = seg.SharedFunctionalGroupsSequence[0]
    per_frame = seg.PerFrameFunctionalGroupsSequence
    seg_type = str(seg.SegmentationType)
    max_frac = float(seg.get("MaximumFractionalValue", 1) or 1)
    origin = np.asarray(volume.origin)
    row_dir = np.asarray(volume.orientation[:3])
    col_dir = np.asarray(volume.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    dz, dy, dx = volume.spacing
    out = np.zeros(volume.shape, dtype=np.uint8)
    placed = 0
    for i, item in enumerate(per_frame):

        def group(kw: str, item: Dataset = item) -> Dataset:
            return (item if kw in item else shared)[kw][0]

        iop = np.array([float(v) for v in group("PlaneOrientationSequence").ImageOrientationPatient])
        ipp = np.array([float(v) for v in group("PlanePositionSequence").ImagePositionPatient])
        spacing = [float(v) for v in group("PixelMeasuresSequence").PixelSpacing]
        transform, f_row, f_col = reorientation(iop)
        frame = transform.forward(np.asarray(seg.get_stored_frame(i + 1)))
        f_dy, f_dx = (spacing[1], spacing[0]) if transform.transpose else (spacing[0], spacing[1])
        if (
            frame.shape != volume.shape[1:]
            or not np.allclose(f_row, row_dir, atol=1e-3)
            or not np.allclose(f_col, col_dir, atol=1e-3)
            or not np.allclose((f_dy, f_dx), (dy, dx), rtol=1e-3)
        ):
            raise ValueError("the SEG frames do not lie on the pixel grid of this series")
        # position of standard voxel [0, 0] of this frame
        r_idx, c_idx = np.meshgrid(np.arange(int(seg.Rows)), np.arange(int(seg.Columns)), indexing="ij")
        r0, c0 = int(transform.forward(r_idx)[0, 0]), int(transform.forward(c_idx)[0, 0])
        pos = ipp + c0 * spacing[1] * iop[:3] + r0 * spacing[0] * iop[3:]
        d = pos - origin
        if abs(float(d @ row_dir)) > 0.5 * dx or abs(float(d @ col_dir)) > 0.5 * dy:
            raise ValueError("the SEG frames are shifted against the pixel grid of this series")
        kf = float(d @ normal) / dz
        k = round(kf)
        if abs(kf - k) > 0.25 or not 0 <= k < volume.shape[0]:
            continue  # a frame outside this series' slices
        if seg_type == "LABELMAP":
            for number, value in mapping.items():
                out[k][frame == number] = value
        else:
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            if number not in mapping:
                continue
            threshold = 0.5 * max_frac if seg_type == "FRACTIONAL" else 0.5
            out[k][frame >= threshold] = mapping[number]
        placed += 1
    if placed == 0 and len(per_frame):
        raise ValueError("no SEG frame lies on a slice of this series")
    return out


# ---------------------------------------------------------------------------------------------------------
# summary


def seg_summary(ds: Dataset) -> dict[str, Any]:
    """What a SEG says about itself: segments, references, operator, algorithm, draft flag."""
    segments = []
    for item in ds.SegmentSequence:
        if int(item.SegmentNumber) == 0:  # the background segment of a LABELMAP SEG
            continue
        code = _item_code(item, "SegmentedPropertyTypeCodeSequence")
        type_seq = item.get("SegmentedPropertyTypeCodeSequence")
        segments.append(
            {
                "number": int(item.SegmentNumber),
                "label": str(item.get("SegmentLabel", "")),
                "key": str(item.get("TrackingID", "")) or None,
                "code": code[0] if code else None,
                "scheme": code[1] if code else None,
                "meaning": str(type_seq[0].CodeMeaning) if type_seq else None,
                "side": _segment_side(item),
                "algorithm_type": str(item.get("SegmentAlgorithmType", "")),
                "algorithm_name": str(item.get("SegmentAlgorithmName", "")) or None,
            }
        )
    ref_series = ds.get("ReferencedSeriesSequence") or []
    creator = ds.get("ContentCreatorName")
    first = ds.SegmentSequence[0] if len(ds.SegmentSequence) else Dataset()
    algo = (first.get("SegmentationAlgorithmIdentificationSequence") or [Dataset()])[0]
    description = str(ds.get("SeriesDescription", ""))
    content_label = str(ds.get("ContentLabel", ""))
    return {
        "segments": segments,
        "segmentation_type": str(ds.get("SegmentationType", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "referenced_series_uid": str(ref_series[0].SeriesInstanceUID) if ref_series else None,
        "referenced_instance_uids": sorted(_referenced_instances(ds)),
        "operator": None if creator is None or str(creator) == DRAFT_CREATOR else str(creator),
        "content_creator": str(creator) if creator is not None else None,
        "algorithm_type": str(first.get("SegmentAlgorithmType", "")) or None,
        "algorithm_name": str(algo.get("AlgorithmName", "")) or None,
        "algorithm_version": str(algo.get("AlgorithmVersion", "")) or None,
        "series_description": description,
        "content_label": content_label,
        "draft": content_label == DRAFT_CONTENT_LABEL or "DRAFT" in description.upper(),
    }
