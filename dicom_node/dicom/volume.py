"""DICOM series ⇄ volume: geometry, sorting, rescale and reorientation.

``load_series`` turns the files of one series (classic single-frame images or one enhanced / legacy-converted
multi-frame image, any transfer syntax pydicom and the pylibjpeg plugins decode) into a float32 array indexed
``(z, y, x)`` in the house's standard orientation (CONTRACTS.md): column index x towards the patient's left,
row index y towards posterior, slice index z towards the head. Slices are sorted by their position along the
slice normal (never by InstanceNumber) and ``dz`` comes from those positions (never from SliceThickness).

Series a leg/thigh model cannot take raise :class:`UnsupportedSeries` with a sentence a radiologist can act
on. The returned :class:`SeriesVolume` remembers how the stored images map onto the array, so label volumes
can be taken back to the source frames (``to_source_order``) when a DICOM-SEG references them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: Largest angle between the slice normal and the patient's head-foot axis that still counts as axial.
MAX_AXIAL_TILT_DEG = 30.0
#: Relative tolerance on slice spacing (fraction of the median spacing) before a series counts as uneven.
SPACING_REL_TOL = 0.05
#: Absolute floor of the spacing tolerance in mm (positions are often rounded to 0.01 mm).
SPACING_ABS_TOL_MM = 0.05
#: Tolerance on direction cosines when comparing orientations of slices.
ORIENTATION_TOL = 1e-3

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData


class UnsupportedSeries(ValueError):
    """The series cannot be segmented; ``reason`` says why in words a radiologist understands."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class InPlaneTransform:
    """How stored frames (rows, columns) map onto the standard (y, x) grid: transpose first, then flips."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def forward(self, arr: np.ndarray) -> np.ndarray:
        """Stored frame layout → standard layout (acts on the last two axes)."""
        out = np.swapaxes(arr, -1, -2) if self.transpose else arr
        if self.flip_rows:
            out = out[..., ::-1, :]
        if self.flip_cols:
            out = out[..., :, ::-1]
        return out

    def inverse(self, arr: np.ndarray) -> np.ndarray:
        """Standard layout → stored frame layout (acts on the last two axes)."""
        out = arr
        if self.flip_cols:
            out = out[..., :, ::-1]
        if self.flip_rows:
            out = out[..., ::-1, :]
        if self.transpose:
            out = np.swapaxes(out, -1, -2)
        return out


@dataclass
class SeriesVolume:
    """One series as a volume in standard orientation, with what is needed to reference it from a SEG.

    ``source_images`` are the headers (pixel data dropped): for classic series one per slice, in z order of
    ``array``; for a multi-frame series the single multi-frame header. ``frame_map[z]`` is ``(dataset, frame
    number)`` for multi-frame series (1-based frame numbers), ``None`` for classic series.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    source_images: list[Dataset]
    Modality: str
    SeriesInstanceUID: str
    StudyInstanceUID: str
    FrameOfReferenceUID: str | None = None
    frame_map: list[tuple[Dataset, int]] | None = None
    in_plane: InPlaneTransform = field(default_factory=InPlaneTransform)
    #: For each stored frame (classic: each item of ``source_images``; multi-frame: frame k+1) its z index.
    source_z: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` shape of ``array``."""
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    @property
    def is_multiframe(self) -> bool:
        return self.frame_map is not None

    @property
    def slice_positions(self) -> np.ndarray:
        """Patient coordinates (x, y, z) of voxel ``[k, 0, 0]`` for every slice k, shape (n, 3)."""
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        k = np.arange(self.shape[0], dtype=np.float64)[:, None]
        return np.asarray(self.origin, dtype=np.float64)[None, :] + k * self.spacing[0] * normal[None, :]

    def source_sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of ``source_images`` (classic series: in z order)."""
        return [str(ds.SOPInstanceUID) for ds in self.source_images]

    def to_source_order(self, labels: np.ndarray) -> np.ndarray:
        """Map a ``(z, y, x)`` array on this volume's grid to stored order: ``(frames, rows, columns)``.

        Classic series: frame i belongs to ``source_images[i]``. Multi-frame: frame i is frame number i+1.
        """
        self._check_shape(labels)
        return np.ascontiguousarray(self.in_plane.inverse(labels[self.source_z]))

    def from_source_order(self, frames: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_source_order`: stored ``(frames, rows, columns)`` → ``(z, y, x)``."""
        std = self.in_plane.forward(frames)
        if std.shape[0] != self.shape[0] or std.shape[1:] != self.shape[1:]:
            raise ValueError(f"array of shape {frames.shape} does not match the stored frames of this series")
        out = np.empty_like(std)
        out[self.source_z] = std
        return out

    def _check_shape(self, arr: np.ndarray) -> None:
        if arr.shape != self.shape:
            raise ValueError(f"array has shape {arr.shape}, the volume has shape {self.shape} (z, y, x)")


@dataclass
class _Frame:
    """One stored 2-D frame before sorting."""

    ds: Dataset
    frame_number: int | None  # 1-based for multi-frame, None for single-frame
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float


def load_series(paths: Sequence[Path]) -> SeriesVolume:
    """Read the files of one series and build its :class:`SeriesVolume` (see module docstring)."""
    if not paths:
        raise UnsupportedSeries("the series has no images")
    datasets = []
    for p in paths:
        try:
            datasets.append(pydicom.dcmread(p))
        except Exception as exc:
            raise UnsupportedSeries(f"a file of the series is not readable DICOM ({Path(p).name}: {exc})") from exc
    return load_datasets(datasets)


def load_datasets(datasets: Sequence[Dataset]) -> SeriesVolume:
    """Like :func:`load_series` for datasets already in memory (they are not modified)."""
    if not datasets:
        raise UnsupportedSeries("the series has no images")
    _check_same_series(datasets)
    _check_modality(datasets)
    multi = [ds for ds in datasets if _is_multiframe(ds)]
    if multi and len(datasets) > 1:
        raise UnsupportedSeries(
            f"the series holds {len(multi)} multi-frame image(s) together with {len(datasets) - len(multi)} "
            "other image(s); send one multi-frame image or a classic series of single slices"
        )
    frames = _frames_of_multiframe(multi[0]) if multi else [_frame_of_single(ds) for ds in datasets]
    if len(frames) < 2:
        raise UnsupportedSeries("a single slice cannot be segmented in 3D; send the whole axial series")
    _check_same_grid(frames)
    in_plane, row_dir, col_dir = reorientation(frames[0].orientation)
    normal = np.cross(row_dir, col_dir)
    order, dz = _sort_and_space(frames, normal)
    _check_in_plane_alignment(frames, order, frames[0].orientation, frames[0].pixel_spacing)

    array = _decode(datasets, frames, order, in_plane)
    first = frames[order[0]]
    origin = _origin(first, in_plane)
    sr, sc = first.pixel_spacing
    dy, dx = (sc, sr) if in_plane.transpose else (sr, sc)

    headers = {id(ds): _header(ds) for ds in datasets}
    if multi:
        hdr = headers[id(multi[0])]
        source_images = [hdr]
        frame_map: list[tuple[Dataset, int]] | None = [(hdr, int(frames[i].frame_number or 0)) for i in order]
        source_z = np.empty(len(frames), dtype=np.int64)
        source_z[np.asarray(order)] = np.arange(len(frames))
    else:
        source_images = [headers[id(frames[i].ds)] for i in order]
        frame_map = None
        source_z = np.arange(len(frames), dtype=np.int64)

    ref = datasets[0]
    vol = SeriesVolume(
        array=array,
        spacing=(float(dz), float(dy), float(dx)),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        orientation=(
            float(row_dir[0]) + 0.0,
            float(row_dir[1]) + 0.0,
            float(row_dir[2]) + 0.0,
            float(col_dir[0]) + 0.0,
            float(col_dir[1]) + 0.0,
            float(col_dir[2]) + 0.0,
        ),
        source_images=source_images,
        Modality=str(ref.get("Modality", "")),
        SeriesInstanceUID=str(ref.get("SeriesInstanceUID", "")),
        StudyInstanceUID=str(ref.get("StudyInstanceUID", "")),
        FrameOfReferenceUID=str(ref.FrameOfReferenceUID) if "FrameOfReferenceUID" in ref else None,
        frame_map=frame_map,
        in_plane=in_plane,
        source_z=source_z,
    )
    log.debug(
        "series volume %s: shape %s spacing %s reorientation %s",
        vol.SeriesInstanceUID,
        vol.shape,
        vol.spacing,
        in_plane,
    )
    return vol


# ---------------------------------------------------------------------------------------------------------
# checks


def _check_same_series(datasets: Sequence[Dataset]) -> None:
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise UnsupportedSeries(f"the images belong to {len(uids)} different series; send one series at a time")


def _check_modality(datasets: Sequence[Dataset]) -> None:
    modalities = sorted({str(ds.get("Modality", "")) or "unknown" for ds in datasets})
    if modalities != ["MR"]:
        raise UnsupportedSeries(
            f"the series has modality {', '.join(modalities)}; the leg/thigh models work on MR images only"
        )


def _is_multiframe(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1


def _check_same_grid(frames: Sequence[_Frame]) -> None:
    first = frames[0]
    for f in frames[1:]:
        if (f.rows, f.columns) != (first.rows, first.columns):
            raise UnsupportedSeries(
                f"the slices have different matrix sizes ({first.rows}×{first.columns} and "
                f"{f.rows}×{f.columns}); send a series acquired as one stack"
            )
        if np.max(np.abs(f.orientation - first.orientation)) > ORIENTATION_TOL:
            raise UnsupportedSeries(
                "the slices have different orientations (a localizer or a mixed series?); "
                "send the axial series on its own"
            )
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-3, atol=1e-4):
            raise UnsupportedSeries(
                f"the slices have different pixel spacings ({first.pixel_spacing} and {f.pixel_spacing} mm); "
                "send a series acquired as one stack"
            )


def reorientation(iop: np.ndarray) -> tuple[InPlaneTransform, np.ndarray, np.ndarray]:
    """Check that ImageOrientationPatient ``iop`` is axial and find the transform to the standard orientation.

    Returns the in-plane transform and the row / column direction cosines of the standard-oriented array;
    raises :class:`UnsupportedSeries` for sagittal, coronal and oblique orientations.
    """
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise UnsupportedSeries("the image orientation of the series is invalid (row and column directions align)")
    normal = normal / norm
    tilt = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if tilt > MAX_AXIAL_TILT_DEG:
        axis = int(np.argmax(np.abs(normal)))
        kind = "oblique"
        if abs(float(normal[axis])) >= math.cos(math.radians(MAX_AXIAL_TILT_DEG)):
            kind = ("sagittal", "coronal", "axial")[axis]
        raise UnsupportedSeries(f"the series is {kind}; the leg/thigh models need axial slices")
    transpose = abs(float(row[1])) > abs(float(row[0]))
    new_row, new_col = (col.copy(), row.copy()) if transpose else (row.copy(), col.copy())
    flip_cols = bool(new_row[0] < 0)
    flip_rows = bool(new_col[1] < 0)
    if flip_cols:
        new_row = -new_row
    if flip_rows:
        new_col = -new_col
    return InPlaneTransform(transpose, flip_rows, flip_cols), new_row, new_col


def _sort_and_space(frames: Sequence[_Frame], normal: np.ndarray) -> tuple[list[int], float]:
    """Sort frames along the (standard) slice normal and return the order and the slice spacing."""
    proj = np.array([float(np.dot(f.position, normal)) for f in frames])
    order = [int(i) for i in np.argsort(proj, kind="stable")]
    steps = np.diff(proj[order])
    if np.any(steps < 1e-3):
        raise UnsupportedSeries(
            "several images lie at the same slice position (several echoes, time points or stacks?); "
            "send a series with one image per slice position"
        )
    median = float(np.median(steps))
    tol = max(SPACING_ABS_TOL_MM, SPACING_REL_TOL * median)
    worst = float(np.max(np.abs(steps - median)))
    if worst > tol:
        raise UnsupportedSeries(
            f"the slices are unevenly spaced ({float(steps.min()):.2f} to {float(steps.max()):.2f} mm; "
            "missing slices?); send the complete series"
        )
    return order, float(np.mean(steps))


def _check_in_plane_alignment(
    frames: Sequence[_Frame], order: Sequence[int], iop: np.ndarray, pixel_spacing: tuple[float, float]
) -> None:
    row, col = iop[:3], iop[3:]
    p0 = frames[order[0]].position
    sr, sc = pixel_spacing
    for i in order[1:]:
        d = frames[i].position - p0
        if abs(float(np.dot(d, row))) > 0.5 * sc or abs(float(np.dot(d, col))) > 0.5 * sr:
            raise UnsupportedSeries(
                "the slices are shifted against each other within the image plane; send a series acquired as one stack"
            )


# ---------------------------------------------------------------------------------------------------------
# frames, pixels, headers


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UnsupportedSeries(f"an image has an invalid {what}") from exc
    if arr.shape != (n,):
        raise UnsupportedSeries(f"an image has an invalid {what}")
    return arr


def _frame_of_single(ds: Dataset) -> _Frame:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedSeries(
            f"image {ds.get('InstanceNumber', '?')} of the series has no pixel data; resend the series"
        )
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if kw not in ds:
            raise UnsupportedSeries(f"an image of the series has no {kw}; the slice geometry is unknown")
    return _Frame(
        ds=ds,
        frame_number=None,
        position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
        orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient"),
        pixel_spacing=_spacing(ds.PixelSpacing),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
    )


def _spacing(value: Any) -> tuple[float, float]:
    arr = _floats(value, 2, "PixelSpacing")
    if np.any(arr <= 0):
        raise UnsupportedSeries("an image has a non-positive PixelSpacing")
    return float(arr[0]), float(arr[1])


def _functional_group(ds: Dataset, index: int, keyword: str) -> Dataset | None:
    """Item of a functional group macro for frame ``index``: per-frame first, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame) and keyword in per_frame[index]:
        seq = per_frame[index].get(keyword)
        return seq[0] if seq else None
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and keyword in shared[0]:
        seq = shared[0].get(keyword)
        return seq[0] if seq else None
    return None


def _frames_of_multiframe(ds: Dataset) -> list[_Frame]:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedSeries("the multi-frame image has no pixel data; resend the series")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = []
    for i in range(n):
        pos = _functional_group(ds, i, "PlanePositionSequence")
        ori = _functional_group(ds, i, "PlaneOrientationSequence")
        meas = _functional_group(ds, i, "PixelMeasuresSequence")
        if pos is None or ori is None or meas is None or "PixelSpacing" not in meas:
            raise UnsupportedSeries(
                "the multi-frame image lacks plane position, orientation or pixel spacing for its frames; "
                "the slice geometry is unknown"
            )
        pvt = _functional_group(ds, i, "PixelValueTransformationSequence")
        src = pvt if pvt is not None else ds
        frames.append(
            _Frame(
                ds=ds,
                frame_number=i + 1,
                position=_floats(pos.ImagePositionPatient, 3, "ImagePositionPatient"),
                orientation=_floats(ori.ImageOrientationPatient, 6, "ImageOrientationPatient"),
                pixel_spacing=_spacing(meas.PixelSpacing),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                slope=float(src.get("RescaleSlope", 1.0) or 1.0),
                intercept=float(src.get("RescaleIntercept", 0.0) or 0.0),
            )
        )
    return frames


def _pixels(ds: Dataset) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", None) or str(ts or "unknown")
        raise UnsupportedSeries(
            f"the images could not be decoded (transfer syntax {name}); resend them uncompressed or "
            "with a standard lossless compression"
        ) from exc


def _decode(
    datasets: Sequence[Dataset], frames: Sequence[_Frame], order: Sequence[int], in_plane: InPlaneTransform
) -> np.ndarray:
    """Decode pixels of ``frames`` in ``order``, apply rescale and the in-plane transform."""
    first = frames[0]
    out = np.empty((len(order), first.rows, first.columns), dtype=np.float32)
    if frames[0].frame_number is not None:
        stack = _pixels(frames[0].ds)
        if stack.ndim == 2:
            stack = stack[None]
        if stack.ndim != 3 or stack.shape[0] != len(frames):
            raise UnsupportedSeries("the multi-frame image holds colour or inconsistent frames; send greyscale MR")
        for z, i in enumerate(order):
            f = frames[i]
            out[z] = stack[int(f.frame_number or 1) - 1].astype(np.float32) * f.slope + f.intercept
    else:
        for z, i in enumerate(order):
            f = frames[i]
            px = _pixels(f.ds)
            if px.shape != (f.rows, f.columns):
                raise UnsupportedSeries("an image of the series is colour or not a single frame; send greyscale MR")
            out[z] = px.astype(np.float32) * f.slope + f.intercept
    return np.ascontiguousarray(in_plane.forward(out))


def _origin(first: _Frame, in_plane: InPlaneTransform) -> np.ndarray:
    """Patient position of voxel [0, 0, 0] of the standard-oriented array."""
    r_idx, c_idx = np.meshgrid(np.arange(first.rows), np.arange(first.columns), indexing="ij")
    r0 = int(in_plane.forward(r_idx)[0, 0])
    c0 = int(in_plane.forward(c_idx)[0, 0])
    sr, sc = first.pixel_spacing
    row, col = first.orientation[:3], first.orientation[3:]
    origin: np.ndarray = first.position + c0 * sc * row + r0 * sr * col
    return origin


def _header(ds: Dataset) -> Dataset:
    """A copy of ``ds`` without pixel data (the original stays untouched)."""
    hdr = Dataset({tag: elem for tag, elem in ds.items() if int(tag) not in _PIXEL_TAGS})
    if hasattr(ds, "file_meta"):
        hdr.file_meta = ds.file_meta
    return hdr
