"""DICOM series → volume: sorting, spacing, rescale, reorientation, multi-frame, compression, refusals.

``make_series`` (also used by test_seg.py and the dciodvfy integration test) builds small synthetic MR series
with pydicom from a ground-truth array in the house's standard orientation.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, RLELossless, generate_uid

from dicom_node.dicom.volume import InPlaneTransform, SeriesVolume, UnsupportedSeries, load_datasets, load_series

X, Y, Z = np.eye(3)


def _rotation_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def make_series(
    stored: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (5.0, 0.8, 0.75),
    origin: tuple[float, float, float] = (-100.0, -80.0, 20.0),
    transform: InPlaneTransform = InPlaneTransform(),
    axes: tuple[np.ndarray, np.ndarray, np.ndarray] = (X, Y, Z),
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "MR",
    slice_thickness: float | None = None,
) -> list[Dataset]:
    """MR Image Storage datasets whose standard-oriented (z, y, x) stored values are ``stored`` (uint16).

    ``transform`` says how the stored frames differ from the standard layout (flips / transpose), ``axes``
    are the patient directions of the standard x, y and slice axes (rotate them for sagittal or tilted
    series). Slices come out in z order with InstanceNumber 1..n.
    """
    n, rows, cols = stored.shape
    dz, dy, dx = spacing
    ax_x, ax_y, ax_z = (np.asarray(a, dtype=np.float64) for a in axes)
    yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ny, nx = transform.inverse(yy), transform.inverse(xx)
    study, series, frame_of_ref = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(n):
        o = np.asarray(origin) + k * dz * ax_z

        def pos(r: int, c: int, o: np.ndarray = o) -> np.ndarray:
            return o + nx[r, c] * dx * ax_x + ny[r, c] * dy * ax_y

        p00, p01, p10 = pos(0, 0), pos(0, 1), pos(1, 0)
        row_dir = (p01 - p00) / np.linalg.norm(p01 - p00)
        col_dir = (p10 - p00) / np.linalg.norm(p10 - p00)
        frame = np.ascontiguousarray(transform.inverse(stored[k]).astype(np.uint16))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        ds.Modality = modality
        ds.PatientName = "Phantom^Synthetic"
        ds.PatientID = "SYNTH-1"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate, ds.StudyTime = "20240101", "120000"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "Laurel test"
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 10, 500, 1, 1.5
        ds.ImagePositionPatient = [round(float(v), 4) for v in p00]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [
            round(float(np.linalg.norm(p10 - p00)), 6),
            round(float(np.linalg.norm(p01 - p00)), 6),
        ]
        ds.SliceThickness = dz if slice_thickness is None else slice_thickness
        ds.Rows, ds.Columns = frame.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
        ds.PixelData = frame.tobytes()
        out.append(ds)
    return out


def to_multiframe(datasets: Sequence[Dataset]) -> Dataset:
    """Legacy Converted Enhanced MR Image of ``datasets`` (highdicom's converter), read back from bytes."""
    import warnings

    import highdicom as hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about absent window centre / width
        mf = hd.legacy.LegacyConvertedEnhancedMRImage(
            list(datasets),
            series_instance_uid=generate_uid(),
            series_number=5,
            sop_instance_uid=generate_uid(),
            instance_number=1,
        )
    buf = io.BytesIO()
    mf.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def random_stored(shape: tuple[int, int, int] = (8, 64, 48), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=shape).astype(np.uint16)


def shuffled(datasets: list[Dataset], seed: int = 1) -> list[Dataset]:
    out = list(datasets)
    random.Random(seed).shuffle(out)
    return out


# ------------------------------------------------------------------------------------------------- classic


def test_sorts_by_position_not_instance_number_and_spacing_from_positions() -> None:
    stored = random_stored()
    dss = make_series(stored, slice_thickness=3.0)
    for ds, n in zip(dss, [5, 1, 8, 2, 7, 3, 6, 4], strict=True):
        ds.InstanceNumber = n  # misleading numbering must not matter
    vol = load_datasets(shuffled(dss))
    assert np.array_equal(vol.array, stored.astype(np.float32))
    assert vol.array.dtype == np.float32
    assert vol.spacing == pytest.approx((5.0, 0.8, 0.75))
    assert vol.origin == pytest.approx((-100.0, -80.0, 20.0))
    assert vol.orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    assert [str(ds.SOPInstanceUID) for ds in vol.source_images] == [str(ds.SOPInstanceUID) for ds in dss]
    assert vol.Modality == "MR"
    assert vol.SeriesInstanceUID == dss[0].SeriesInstanceUID
    assert vol.StudyInstanceUID == dss[0].StudyInstanceUID
    assert vol.frame_map is None


def test_rescale_slope_and_intercept_are_applied() -> None:
    stored = random_stored(seed=3)
    vol = load_datasets(make_series(stored, slope=2.5, intercept=-100.0))
    assert np.allclose(vol.array, stored.astype(np.float32) * 2.5 - 100.0)


@pytest.mark.parametrize(
    "transform",
    [
        InPlaneTransform(flip_cols=True),
        InPlaneTransform(flip_rows=True),
        InPlaneTransform(flip_rows=True, flip_cols=True),
        InPlaneTransform(transpose=True),
        InPlaneTransform(transpose=True, flip_rows=True),
    ],
    ids=["row-dir-minus-x", "col-dir-minus-y", "both-flipped", "transposed", "transposed-flipped"],
)
def test_flipped_axial_series_is_reoriented_and_maps_back(transform: InPlaneTransform) -> None:
    stored = random_stored(seed=5)
    dss = make_series(stored, transform=transform)
    vol = load_datasets(shuffled(dss))
    assert vol.in_plane == transform
    assert np.array_equal(vol.array, stored.astype(np.float32))
    assert vol.origin == pytest.approx((-100.0, -80.0, 20.0), abs=1e-3)
    assert vol.orientation == pytest.approx((1, 0, 0, 0, 1, 0), abs=1e-6)
    assert vol.spacing == pytest.approx((5.0, 0.8, 0.75))
    # labels on the standard grid map back onto the stored frames of the source images
    frames = vol.to_source_order(stored)
    for i, ds in enumerate(vol.source_images):
        src = next(d for d in dss if d.SOPInstanceUID == ds.SOPInstanceUID)
        assert np.array_equal(frames[i], src.pixel_array)
    assert np.array_equal(vol.from_source_order(frames), stored)


def test_tilted_axial_within_30_degrees_is_accepted() -> None:
    rot = _rotation_x(20)
    vol = load_datasets(make_series(random_stored(), axes=(rot @ X, rot @ Y, rot @ Z)))
    normal = np.cross(vol.orientation[:3], vol.orientation[3:])
    assert normal[2] == pytest.approx(np.cos(np.radians(20)), abs=1e-4)
    assert vol.spacing[0] == pytest.approx(5.0)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000-lossless"])
def test_compressed_transfer_syntaxes_decode(syntax: str, tmp_path: Path) -> None:
    stored = random_stored(seed=7)
    paths = []
    for i, ds in enumerate(make_series(stored, slope=0.5, intercept=10.0)):
        ds.compress(syntax)
        paths.append(tmp_path / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    vol = load_series(paths[::-1])
    assert np.array_equal(vol.array, stored.astype(np.float32) * 0.5 + 10.0)


def test_headers_drop_pixel_data_and_inputs_stay_untouched() -> None:
    dss = make_series(random_stored())
    vol = load_datasets(dss)
    assert all("PixelData" not in ds for ds in vol.source_images)
    assert all("PixelData" in ds for ds in dss)
    assert vol.source_images[0].PatientID == "SYNTH-1"


# --------------------------------------------------------------------------------------------- multi-frame


@pytest.mark.parametrize("transform", [InPlaneTransform(), InPlaneTransform(flip_cols=True)], ids=["std", "flip"])
def test_multiframe_enhanced_mr(transform: InPlaneTransform, tmp_path: Path) -> None:
    stored = random_stored(seed=11)
    mf = to_multiframe(shuffled(make_series(stored, transform=transform), seed=4))
    assert int(mf.NumberOfFrames) == stored.shape[0]
    path = tmp_path / "mf.dcm"
    mf.save_as(path, enforce_file_format=True)
    vol = load_series([path])
    assert np.array_equal(vol.array, stored.astype(np.float32))
    assert vol.is_multiframe and vol.frame_map is not None
    assert len(vol.source_images) == 1 and "PixelData" not in vol.source_images[0]
    frame_numbers = [f for _, f in vol.frame_map]
    assert sorted(frame_numbers) == list(range(1, stored.shape[0] + 1))
    # frame k+1 of the stored image is slice source_z[k]; to_source_order gives the frames in stored order
    stack = mf.pixel_array
    assert np.array_equal(vol.to_source_order(stored), stack)
    for z, (_, number) in enumerate(vol.frame_map):
        assert vol.source_z[number - 1] == z


def test_multiframe_rescale_from_functional_groups() -> None:
    stored = random_stored(seed=12)
    mf = to_multiframe(make_series(stored, slope=3.0, intercept=-7.0))
    vol = load_datasets([mf])
    assert np.allclose(vol.array, stored.astype(np.float32) * 3.0 - 7.0)


# ----------------------------------------------------------------------------------------------- refusals


def _refusal(datasets: list[Dataset]) -> str:
    with pytest.raises(UnsupportedSeries) as info:
        load_datasets(datasets)
    assert info.value.reason == str(info.value)
    return info.value.reason


def test_single_slice_is_refused() -> None:
    reason = _refusal(make_series(random_stored((1, 32, 32))))
    assert "single slice cannot be segmented in 3D" in reason
    assert "whole axial series" in reason


@pytest.mark.parametrize(
    ("axes", "kind"),
    [
        ((Y, -Z, X), "sagittal"),
        ((X, -Z, Y), "coronal"),
        (tuple(_rotation_x(45) @ a for a in (X, Y, Z)), "oblique"),
    ],
    ids=["sagittal", "coronal", "oblique-45"],
)
def test_non_axial_series_is_refused(axes: tuple[np.ndarray, np.ndarray, np.ndarray], kind: str) -> None:
    reason = _refusal(make_series(random_stored(), axes=axes))
    assert f"the series is {kind}" in reason
    assert "need axial slices" in reason


def test_wrong_modality_is_refused() -> None:
    assert "modality CT" in _refusal(make_series(random_stored(), modality="CT"))


def test_mixed_matrix_sizes_are_refused() -> None:
    a = make_series(random_stored((4, 32, 32)))
    b = make_series(random_stored((4, 32, 40)), origin=(-100.0, -80.0, 40.0))
    for ds in b:
        ds.SeriesInstanceUID = a[0].SeriesInstanceUID
    assert "different matrix sizes" in _refusal(a + b)


def test_mixed_orientation_is_refused() -> None:
    dss = make_series(random_stored())
    rot = _rotation_x(10)
    dss[3].ImageOrientationPatient = [float(v) for v in (*(rot @ X), *(rot @ Y))]
    assert "different orientations" in _refusal(dss)


def test_missing_slice_uneven_spacing_is_refused() -> None:
    dss = make_series(random_stored())
    del dss[4]
    assert "unevenly spaced" in _refusal(dss)


def test_duplicate_positions_are_refused() -> None:
    dss = make_series(random_stored())
    dss[2].ImagePositionPatient = dss[3].ImagePositionPatient
    assert "same slice position" in _refusal(dss)


def test_missing_pixel_data_is_refused() -> None:
    dss = make_series(random_stored())
    del dss[5].PixelData
    assert "no pixel data" in _refusal(dss)


def test_images_of_two_series_are_refused() -> None:
    dss = make_series(random_stored())
    dss[0].SeriesInstanceUID = generate_uid()
    assert "2 different series" in _refusal(dss)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(UnsupportedSeries, match="not readable DICOM"):
        load_series([bad])


def test_shape_checks_of_label_mapping() -> None:
    vol: SeriesVolume = load_datasets(make_series(random_stored()))
    with pytest.raises(ValueError, match="shape"):
        vol.to_source_order(np.zeros((2, 2, 2), dtype=np.uint8))


# ------------------------------------------------------------------------------------------------ phantom


@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
def test_phantom_series_if_the_phantom_generator_is_available(enhanced: bool, tmp_path: Path) -> None:
    try:
        from models.phantom import PhantomSpec, generate, write_series
    except ImportError:
        pytest.skip("models.phantom (generate, write_series) is not available yet")
    ph = generate(PhantomSpec(region="leg", contrast="pd", seed=3, n_slices=6, matrix=96))
    try:
        paths = write_series(ph, tmp_path, enhanced=enhanced)
    except (ImportError, NotImplementedError) as exc:
        pytest.skip(f"the phantom writer cannot write this variant yet: {exc}")
    vol = load_series(paths)
    assert vol.shape == ph.image.shape
    assert vol.spacing == pytest.approx(ph.spacing, abs=1e-3)
    assert vol.origin == pytest.approx(ph.origin, abs=1e-2)
    assert vol.orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    # the writer stores the image as rounded 12-bit values without rescale
    assert np.array_equal(vol.array, np.clip(np.rint(ph.image), 0, 4095).astype(np.float32))
