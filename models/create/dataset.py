"""A site's labelled studies as training cases: DICOM series with a DICOM-SEG each, or NIfTI image + mask pairs.

DICOM: every file under the folder is read (header first, bounded); a SEG is matched to its source series
by its ReferencedSeriesSequence and the SOP instances its frames reference, its segments to the label table
by SegmentLabel / TrackingID / SNOMED CT code + laterality. A SEG whose frames do not lie on its series'
pixel grid (size, orientation, spacing, positions) is refused with the reason. Images are read the way the
node reads them (:func:`dicom_node.dicom.volume.load_series`), so a model sees the same orientation in training
and on the node.

NIfTI: ``images/<case>.nii[.gz]`` with ``labels/<case>.nii[.gz]`` (also ``imagesTr``/``labelsTr`` and the
nnU-Net ``_0000`` suffix), read with SimpleITK, plus a label table; the mask must share the image's grid.

Nothing is unpickled; sizes are bounded (:data:`LIMITS`) and refused with a clear error.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.create.labels import LabelTable, SegmentInfo, read_table, table_from_segments

logger = logging.getLogger(__name__)

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
POSITION_TOL_MM = 0.05
GENERIC_BODY_STRUCTURE = "123037004"  # SCT "Body structure": what the node writes for a label without a code
LIMITS = {
    "files": 100_000,  # files under a DICOM folder
    "file_bytes": 2 << 30,  # one file
    "voxels": 1 << 27,  # one volume (134 M voxels, 0.5 GB as float32)
    "cases": 5_000,
}

Progress = Callable[[float], None]


class DatasetError(ValueError):
    """Labelled data that cannot be used, with what to fix."""


@dataclass
class CaseRef:
    """One labelled volume, loaded on demand: ``load()`` → (image, labels, spacing)."""

    name: str
    subject: str
    source: str
    loader: Callable[[], tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]

    @property
    def subject_ref(self) -> str:
        """A pseudonym of the subject (no patient identifier leaves the site in a package)."""
        return hashlib.sha256(self.subject.encode()).hexdigest()[:12]

    def load(self) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        """Read the image and its labels."""
        return self.loader()


@dataclass
class Dataset:
    """Labelled cases and the label table they use."""

    table: LabelTable
    cases: list[CaseRef]
    kind: str
    skipped: list[str] = field(default_factory=list)

    def subjects(self) -> list[str]:
        """The distinct subjects, sorted."""
        return sorted({c.subject for c in self.cases})

    def iter_cases(
        self, refs: Sequence[CaseRef] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
        """(image, labels, spacing) of ``refs`` (default: all), read one at a time."""
        for ref in self.cases if refs is None else refs:
            yield ref.load()


def _check_voxels(shape: Sequence[int], what: str) -> None:
    n = int(np.prod([int(s) for s in shape]))
    if n > LIMITS["voxels"]:
        raise DatasetError(f"{what} has {n} voxels; at most {LIMITS['voxels']} are read (shape {tuple(shape)})")


def load_dataset(path: Path, labels_file: Path | None = None) -> Dataset:
    """The labelled cases under ``path``: NIfTI pairs when it holds ``images``/``labels`` folders, else
    DICOM series with their SEGs."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder of labelled data")
    table = read_table(labels_file) if labels_file is not None else None
    if _nifti_dirs(path) is not None:
        if table is None:
            raise DatasetError("NIfTI masks need a label table (--labels table.csv or .json): name, code, colour")
        return _nifti_dataset(path, table)
    return _dicom_dataset(path, table)


# ---------------------------------------------------------------------------------------------------------
# NIfTI


def _nifti_dirs(path: Path) -> tuple[Path, Path] | None:
    for images, labels in (("images", "labels"), ("imagesTr", "labelsTr"), ("images", "masks")):
        if (path / images).is_dir() and (path / labels).is_dir():
            return path / images, path / labels
    return None


def _case_name(p: Path) -> str:
    name = p.name
    for suffix in NIFTI_SUFFIXES[::-1]:
        name = name.removesuffix(suffix)
    return name.removesuffix("_0000")


def _nifti_files(folder: Path) -> dict[str, Path]:
    files = {_case_name(p): p for p in sorted(folder.iterdir()) if p.name.endswith(NIFTI_SUFFIXES)}
    if len(files) > LIMITS["cases"]:
        raise DatasetError(f"{folder} holds {len(files)} cases; at most {LIMITS['cases']}")
    return files


def _nifti_dataset(path: Path, table: LabelTable) -> Dataset:
    images_dir, labels_dir = _nifti_dirs(path) or (path, path)
    images, masks = _nifti_files(images_dir), _nifti_files(labels_dir)
    missing = sorted(set(images) - set(masks))
    if missing:
        raise DatasetError(f"no mask in {labels_dir} for image(s) {', '.join(missing[:5])}")
    if not images:
        raise DatasetError(f"no .nii/.nii.gz images in {images_dir}")
    cases = [
        CaseRef(name, name, str(images[name]), functools.partial(_read_nifti_pair, images[name], masks[name], table))
        for name in sorted(images)
    ]
    return Dataset(table, cases, "nifti")


def _read_nifti(path: Path) -> Any:
    import SimpleITK as sitk

    if path.stat().st_size > LIMITS["file_bytes"]:
        raise DatasetError(f"{path.name} is larger than {LIMITS['file_bytes']} bytes")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DatasetError(f"{path.name} is not a readable NIfTI image: {exc}") from None
    if reader.GetDimension() != 3:
        raise DatasetError(f"{path.name} is {reader.GetDimension()}-D; a 3-D volume is expected")
    _check_voxels(reader.GetSize(), path.name)
    return reader.Execute()


def _read_nifti_pair(
    image_path: Path, mask_path: Path, table: LabelTable
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Image and mask as ``(z, y, x)`` arrays with (dz, dy, dx) spacing; the mask must share the grid."""
    import SimpleITK as sitk

    image, mask = _read_nifti(image_path), _read_nifti(mask_path)
    same = (
        image.GetSize() == mask.GetSize()
        and np.allclose(image.GetSpacing(), mask.GetSpacing(), rtol=1e-3)
        and np.allclose(image.GetOrigin(), mask.GetOrigin(), atol=POSITION_TOL_MM)
        and np.allclose(image.GetDirection(), mask.GetDirection(), atol=1e-3)
    )
    if not same:
        raise DatasetError(
            f"the mask {mask_path.name} is not on the grid of {image_path.name} (size {mask.GetSize()} vs "
            f"{image.GetSize()}, spacing {mask.GetSpacing()} vs {image.GetSpacing()}); resample it first"
        )
    img = sitk.GetArrayFromImage(image).astype(np.float32)
    raw = sitk.GetArrayFromImage(mask)
    if not np.issubdtype(raw.dtype, np.integer) and not np.array_equal(raw, np.round(raw)):
        raise DatasetError(f"the mask {mask_path.name} holds non-integer values")
    values = np.unique(raw)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in table.by_value())
    if unknown:
        raise DatasetError(f"the mask {mask_path.name} holds values {unknown[:10]} that the label table lacks")
    sx, sy, sz = image.GetSpacing()
    return img, raw.astype(np.uint8), (float(sz), float(sy), float(sx))


# ---------------------------------------------------------------------------------------------------------
# DICOM + SEG


@dataclass
class _Series:
    uid: str
    files: list[Path] = field(default_factory=list)
    subject: str = ""
    sop_uids: set[str] = field(default_factory=set)


def _scan_dicom(path: Path) -> tuple[dict[str, _Series], list[tuple[Path, Any]], list[str]]:
    import pydicom

    series: dict[str, _Series] = {}
    segs: list[tuple[Path, Any]] = []
    skipped: list[str] = []
    count = 0
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        count += 1
        if count > LIMITS["files"]:
            raise DatasetError(f"{path} holds more than {LIMITS['files']} files; point at a smaller folder")
        if p.stat().st_size > LIMITS["file_bytes"]:
            raise DatasetError(f"{p} is larger than {LIMITS['file_bytes']} bytes")
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            skipped.append(f"{p.name}: not DICOM")
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in SEG_SOP_CLASSES:
            segs.append((p, ds))
            continue
        if "PixelData" not in ds and "FloatPixelData" not in ds and not hasattr(ds, "Rows"):
            skipped.append(f"{p.name}: no image")
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        item = series.setdefault(uid, _Series(uid))
        item.files.append(p)
        item.sop_uids.add(str(ds.get("SOPInstanceUID", "")))
        item.subject = str(ds.get("PatientID", "") or ds.get("StudyInstanceUID", "") or uid)
    return series, segs, skipped


def segment_infos(ds: Any) -> dict[int, SegmentInfo]:
    """``{segment number: what it is}`` for the segments of a SEG (the LABELMAP background excluded)."""
    import highdicom as hd

    side_codes = {"24028007": "right", "7771000": "left"}
    out: dict[int, SegmentInfo] = {}
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        if number == 0:
            continue
        code = meaning = side = None
        seq = item.get("SegmentedPropertyTypeCodeSequence")
        if seq:
            generic = str(seq[0].CodeValue) == GENERIC_BODY_STRUCTURE  # a label without its own code
            if str(seq[0].get("CodingSchemeDesignator", "")) in ("SCT", "SRT") and not generic:
                code, meaning = str(seq[0].CodeValue), str(seq[0].get("CodeMeaning", ""))
            for mod in seq[0].get("SegmentedPropertyTypeModifierCodeSequence", []):
                side = side_codes.get(str(mod.get("CodeValue", "")), side)
        colour = None
        if "RecommendedDisplayCIELabValue" in item:
            lab = hd.color.CIELabColor.from_dicom_value(list(item.RecommendedDisplayCIELabValue))
            colour = tuple(int(c) for c in lab.to_rgb())
        out[number] = SegmentInfo(
            key=str(item.get("TrackingID", "")) or None,
            name=str(item.get("SegmentLabel", "")) or f"segment {number}",
            snomed_code=code,
            snomed_meaning=meaning,
            side=side,
            colour=colour,  # type: ignore[arg-type]
        )
    return out


def _referenced(ds: Any) -> tuple[set[str], set[str]]:
    series, instances = set(), set()
    for item in ds.get("ReferencedSeriesSequence", []):
        series.add(str(item.SeriesInstanceUID))
        for inst in item.get("ReferencedInstanceSequence", []):
            instances.add(str(inst.ReferencedSOPInstanceUID))
    return series, instances


def _dicom_dataset(path: Path, table: LabelTable | None) -> Dataset:
    series, segs, skipped = _scan_dicom(path)
    if not segs:
        raise DatasetError(f"no DICOM-SEG under {path}: each series needs the SEG of its labels")
    pairs: list[tuple[Path, Any, _Series]] = []
    for seg_path, ds in segs:
        ref_series, ref_instances = _referenced(ds)
        found = [series[u] for u in sorted(ref_series) if u in series]
        if not found:
            raise DatasetError(
                f"the SEG {seg_path.name} references series {', '.join(sorted(ref_series)) or '(none)'}, "
                f"which is not under {path}"
            )
        source = found[0]
        if ref_instances and not ref_instances & source.sop_uids:
            raise DatasetError(f"the SEG {seg_path.name} references no image of series {source.uid}")
        pairs.append((seg_path, ds, source))
    used = {s.uid for _, _, s in pairs}
    for uid in sorted(set(series) - used):
        skipped.append(f"series {uid}: no SEG")
    if len(used) != len(pairs):
        raise DatasetError("two SEGs reference the same series; keep one SEG per series")
    if table is None:
        infos = [info for _, ds, _ in pairs for _, info in sorted(segment_infos(ds).items())]
        table = table_from_segments(infos)
    cases = []
    for seg_path, ds, source in pairs:
        mapping = _segment_mapping(ds, table, seg_path.name)
        cases.append(
            CaseRef(
                name=source.uid,
                subject=source.subject,
                source=str(seg_path),
                loader=functools.partial(_read_dicom_case, source, seg_path, mapping),
            )
        )
    if len(cases) > LIMITS["cases"]:
        raise DatasetError(f"{len(cases)} cases; at most {LIMITS['cases']}")
    for note in skipped:
        logger.info("skipped %s", note)
    return Dataset(table, cases, "dicom-seg", skipped)


def _segment_mapping(ds: Any, table: LabelTable, name: str) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for number, info in segment_infos(ds).items():
        lab = table.find(info.key, info.name, info.snomed_code, info.side)
        if lab is None:
            logger.warning("%s: segment %d (%s) is not in the label table; ignored", name, number, info.name)
            continue
        mapping[number] = lab.value
    if not mapping:
        raise DatasetError(f"no segment of the SEG {name} matches the label table (by SegmentLabel, code, side)")
    return mapping


def _read_dicom_case(
    source: _Series, seg_path: Path, mapping: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    import highdicom as hd
    import pydicom

    from dicom_node.dicom.volume import UnsupportedSeries, load_series

    try:
        volume = load_series(source.files)
    except UnsupportedSeries as exc:
        raise DatasetError(f"series {source.uid} cannot be read: {exc}") from None
    _check_voxels(volume.shape, f"series {source.uid}")
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(seg_path), copy=False)
    check_geometry(seg, volume, seg_path.name)
    numbers = sorted(mapping)
    kwargs: dict[str, Any] = {"segment_numbers": numbers, "combine_segments": False}
    try:
        if volume.is_multiframe:
            frames = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=volume.source_sop_instance_uids()[0],
                source_frame_numbers=list(range(1, len(volume.source_z) + 1)),
                **kwargs,
            )
        else:
            frames = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=volume.source_sop_instance_uids(), **kwargs
            )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise DatasetError(f"the SEG {seg_path.name} cannot be mapped onto series {source.uid}: {exc}") from None
    stacked = np.asarray(frames)
    labels = np.zeros(volume.shape, dtype=np.uint8)
    for j, number in enumerate(numbers):
        labels[volume.from_source_order(stacked[..., j]) >= 0.5] = mapping[number]  # fractional: 0..1
    return volume.array.astype(np.float32), labels, volume.spacing


def check_geometry(seg: Any, volume: Any, name: str) -> None:
    """Refuse a SEG whose frames do not lie on its series' pixel grid: the frame size, orientation, pixel
    spacing and every frame's position must be those of the image it references."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in volume.source_images}
    if volume.is_multiframe:
        return _check_multiframe(seg, volume, name)
    first = volume.source_images[0]
    if (int(seg.Rows), int(seg.Columns)) != (int(first.Rows), int(first.Columns)):
        raise DatasetError(
            f"the SEG {name} has frames of {seg.Rows}x{seg.Columns} pixels, its series {volume.SeriesInstanceUID} "
            f"{first.Rows}x{first.Columns}: it does not match the series' geometry"
        )
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):

        def group(keyword: str, item: Any = item) -> Any:
            holder = item if keyword in item else shared
            return holder[keyword][0] if holder is not None and keyword in holder else None

        derivation = group("DerivationImageSequence")
        if derivation is None or "SourceImageSequence" not in derivation:
            raise DatasetError(f"the SEG {name}: frame {i + 1} names no source image, so it cannot be matched")
        ref = str(derivation.SourceImageSequence[0].ReferencedSOPInstanceUID)
        src = by_uid.get(ref)
        if src is None:
            raise DatasetError(f"the SEG {name}: frame {i + 1} references an image that is not in its series")
        pos, ori, pix = (
            group("PlanePositionSequence"),
            group("PlaneOrientationSequence"),
            group("PixelMeasuresSequence"),
        )
        checks = (
            ("position", pos and pos.ImagePositionPatient, src.get("ImagePositionPatient"), POSITION_TOL_MM),
            ("orientation", ori and ori.ImageOrientationPatient, src.get("ImageOrientationPatient"), 1e-3),
            ("pixel spacing", pix and pix.PixelSpacing, src.get("PixelSpacing"), 1e-3),
        )
        for what, mine, theirs, tol in checks:
            if mine is None or theirs is None:
                continue
            a, b = np.asarray(mine, dtype=float), np.asarray(theirs, dtype=float)
            if a.shape != b.shape or not np.allclose(a, b, atol=tol):
                raise DatasetError(
                    f"the SEG {name} does not match the geometry of series {volume.SeriesInstanceUID}: frame {i + 1} "
                    f"has {what} {a.round(3).tolist()}, its source image {b.round(3).tolist()}"
                )
    return None


def _check_multiframe(seg: Any, volume: Any, name: str) -> None:
    src = volume.source_images[0]
    if (int(seg.Rows), int(seg.Columns)) != (int(src.Rows), int(src.Columns)):
        raise DatasetError(f"the SEG {name} has frames of {seg.Rows}x{seg.Columns} pixels, its series another size")
