"""Writing a phantom as a DICOM MR series (MR Image Storage) and its ground truth as ``.npz``.

Everything written is marked SYNTHETIC (patient name, IDs, descriptions, comments). UIDs are derived
from the spec (name-based UUIDs), so regenerating a spec writes the
same UIDs and the same bytes. Files are written under temporary names and renamed when complete; a
failure removes what this call wrote.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.labels import region_labels
from models.phantom.spec import Phantom

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
MANUFACTURER = "LAUREL SYNTHETIC"
SOFTWARE_VERSION = "laurel-phantom 1"


_UID_NAMESPACE = uuid.UUID("6c61a7f2-3e7b-5d1c-9a0e-1f2b3c4d5e6f")


def uid(*parts: object) -> str:
    """A deterministic ``2.25`` UID (name-based UUID, ISO/IEC 9834-8) from the given parts.

    ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` ignores its entropy sources and returns
    a random UUID, so it cannot give reproducible UIDs; a version-5 UUID of the parts can.
    """
    name = "laurel-phantom|" + "|".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True)
class StudyInfo:
    """The patient and study a series belongs to; pass one instance to several ``write_series`` calls."""

    StudyInstanceUID: str
    PatientName: str
    PatientID: str
    PatientBirthDate: str
    PatientSex: str
    PatientAge: str
    StudyDate: str
    StudyTime: str
    StudyID: str
    AccessionNumber: str
    StudyDescription: str
    ReferringPhysicianName: str = ""

    @classmethod
    def for_subject(cls, region: str, seed: int) -> StudyInfo:
        """The default study of subject ``seed``: every series of that subject and region shares it."""
        rng = np.random.default_rng([int(seed), 1 if region == "leg" else 2, 9])
        date = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 700)))
        age = int(rng.integers(18, 76))
        birth = date - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
        hour, minute = int(rng.integers(7, 19)), int(rng.integers(0, 60))
        tag = f"{region.upper()}-{seed:05d}"
        return cls(
            StudyInstanceUID=uid("study", region, seed),
            PatientName=f"SYNTHETIC^PHANTOM^{tag}",
            PatientID=f"LAUREL-PHANTOM-{tag}",
            PatientBirthDate=birth.strftime("%Y%m%d"),
            PatientSex=str(rng.choice(["F", "M"])),
            PatientAge=f"{age:03d}Y",
            StudyDate=date.strftime("%Y%m%d"),
            StudyTime=f"{hour:02d}{minute:02d}00",
            StudyID=f"S{seed % 100000:05d}",
            AccessionNumber=f"SYN{seed % 10_000_000:07d}",
            StudyDescription=f"SYNTHETIC PHANTOM MR {region.upper()}",
        )


def study_for(ph: Phantom) -> StudyInfo:
    """The default :class:`StudyInfo` of a phantom (shared by all contrasts of its subject)."""
    return StudyInfo.for_subject(ph.spec.region, ph.spec.seed)


def series_uid(ph: Phantom, study: StudyInfo, series_number: int, enhanced: bool) -> str:
    """SeriesInstanceUID: the same spec, study, number and variant always give the same UID."""
    return uid("series", study.StudyInstanceUID, series_number, enhanced, *ph.spec.key())


def window(image: np.ndarray) -> tuple[float, float]:
    """(WindowCenter, WindowWidth) covering the body's signal range."""
    sample = image[:, ::4, ::4]
    hi = float(np.percentile(sample, 99.7))
    return round(hi * 0.45, 1), round(max(hi * 0.95, 1.0), 1)


def series_description(ph: Phantom) -> str:
    """E.g. ``SYNTHETIC leg T1 axial`` (routing rules match the region name)."""
    names = {"pd": "PD", "t1": "T1", "t2fs": "T2 FS"}
    limbs = "" if ph.spec.limbs == "both" else f" {ph.spec.limbs}"
    return f"SYNTHETIC {ph.spec.region}{limbs} {names[ph.spec.contrast]} axial"


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Round the float image to the stored 12-bit unsigned pixel values."""
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


def laterality(ph: Phantom) -> str:
    """ImageLaterality: R, L or B (both)."""
    return {"both": "B", "left": "L", "right": "R"}[ph.spec.limbs]


def common_attributes(ph: Phantom, study: StudyInfo, series_number: int, series_uid_: str) -> dict[str, object]:
    """Patient, study, series, frame of reference and equipment attributes shared by every instance."""
    acq = ph.acquisition
    series_time = (dt.datetime.strptime(study.StudyTime, "%H%M%S") + dt.timedelta(minutes=4 * series_number)).strftime(
        "%H%M%S"
    )
    attrs: dict[str, object] = {
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": study.PatientName,
        "PatientID": study.PatientID,
        "PatientBirthDate": study.PatientBirthDate,
        "PatientSex": study.PatientSex,
        "PatientAge": study.PatientAge,
        "PatientComments": "SYNTHETIC phantom generated by Laurel; not a patient",
        "StudyInstanceUID": study.StudyInstanceUID,
        "StudyDate": study.StudyDate,
        "StudyTime": study.StudyTime,
        "StudyID": study.StudyID,
        "AccessionNumber": study.AccessionNumber,
        "StudyDescription": study.StudyDescription,
        "ReferringPhysicianName": study.ReferringPhysicianName,
        "Modality": "MR",
        "SeriesInstanceUID": series_uid_,
        "SeriesNumber": int(series_number),
        "SeriesDate": study.StudyDate,
        "SeriesTime": series_time,
        "SeriesDescription": series_description(ph),
        "ProtocolName": acq.get("ProtocolName", "SYNTHETIC"),
        "BodyPartExamined": ph.spec.region.upper(),
        "PatientPosition": "FFS",
        "FrameOfReferenceUID": uid("frame-of-reference", study.StudyInstanceUID),
        "PositionReferenceIndicator": "",
        "Manufacturer": MANUFACTURER,
        "ManufacturerModelName": "Laurel MR phantom",
        "DeviceSerialNumber": "SYNTHETIC-0001",
        "SoftwareVersions": SOFTWARE_VERSION,
        "InstitutionName": "SYNTHETIC DATA (Laurel phantom)",
        "StationName": "PHANTOM",
    }
    # (series) Laterality is left out on purpose: ImageLaterality / FrameLaterality carry the side, and
    # the standard forbids Laterality when they are present
    return attrs


def mr_acquisition_attributes(ph: Phantom) -> dict[str, object]:
    """MR Image module attributes from the phantom's acquisition parameters."""
    acq = ph.acquisition
    n = ph.shape[2]
    attrs: dict[str, object] = {
        "ScanningSequence": acq["ScanningSequence"],
        "SequenceVariant": acq["SequenceVariant"],
        "ScanOptions": acq["ScanOptions"],
        "MRAcquisitionType": acq["MRAcquisitionType"],
        "SequenceName": acq["SequenceName"],
        "AngioFlag": "N",
        "RepetitionTime": acq["RepetitionTime"],
        "EchoTime": acq["EchoTime"],
        "EchoTrainLength": acq["EchoTrainLength"],
        "NumberOfAverages": acq["NumberOfAverages"],
        "ImagingFrequency": acq["ImagingFrequency"],
        "ImagedNucleus": acq["ImagedNucleus"],
        "EchoNumbers": acq["EchoNumbers"],
        "MagneticFieldStrength": acq["MagneticFieldStrength"],
        "SpacingBetweenSlices": round(ph.spacing[0], 4),
        "NumberOfPhaseEncodingSteps": n,
        "PercentSampling": 100.0,
        "PercentPhaseFieldOfView": 100.0,
        "PixelBandwidth": acq["PixelBandwidth"],
        "ReceiveCoilName": acq["ReceiveCoilName"],
        "TransmitCoilName": acq["TransmitCoilName"],
        "AcquisitionMatrix": [n, 0, 0, n],
        "InPlanePhaseEncodingDirection": "ROW",
        "FlipAngle": acq["FlipAngle"],
        "VariableFlipAngleFlag": "N",
    }
    return attrs


def fmt_ds(value: float) -> str:
    """A decimal string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


@contextmanager
def _atomic_outputs(out_dir: Path) -> Iterator[list[Path]]:
    """Collect written paths; on failure remove them (and their temporaries)."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        for tmp in out_dir.glob(".*.partial"):
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes under a temporary name, then rename into place."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_series(
    ph: Phantom,
    out_dir: Path,
    *,
    study: StudyInfo | None = None,
    series_number: int = 1,
    enhanced: bool = False,
) -> list[Path]:
    """Write ``ph`` as an MR Image Storage series (one file per slice) or one Enhanced MR Image.

    Returns the written paths. ``study`` puts several series in one study (default: the subject's
    own study, shared by all its contrasts).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = study or study_for(ph)
    if not 1 <= series_number <= 99999:
        raise ValueError(f"series_number must be within 1..99999, got {series_number}")
    if enhanced:
        from models.phantom.enhanced import write_enhanced

        return write_enhanced(ph, out_dir, study=study, series_number=series_number)
    return _write_classic(ph, out_dir, study, series_number)


def _write_classic(ph: Phantom, out_dir: Path, study: StudyInfo, series_number: int) -> list[Path]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    s_uid = series_uid(ph, study, series_number, False)
    pixels = to_uint16(ph.image)
    wc, ww = window(ph.image)
    nz, ny, nx = ph.shape
    dz, dy, dx = ph.spacing
    ds = Dataset()
    for keyword, v in common_attributes(ph, study, series_number, s_uid).items():
        setattr(ds, keyword, v)
    for keyword, v in mr_acquisition_attributes(ph).items():
        setattr(ds, keyword, v)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.InstanceCreationDate = study.StudyDate
    ds.InstanceCreationTime = ds.SeriesTime
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study.StudyDate
    ds.ContentDate = study.StudyDate
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ImageComments = "SYNTHETIC phantom image (Laurel); ground truth in labels.npz"
    ds.ImageLaterality = laterality(ph)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelSpacing = [fmt_ds(dy), fmt_ds(dx)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = fmt_ds(dz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = fmt_ds(wc)
    ds.WindowWidth = fmt_ds(ww)
    ds.WindowCenterWidthExplanation = "SYNTHETIC body window"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "LAUREL_PHANTOM"
    ds.file_meta = meta
    base_time = dt.datetime.strptime(str(ds.SeriesTime), "%H%M%S")
    positions = ph.slice_positions()
    paths: list[Path] = []
    with _atomic_outputs(out_dir) as written:
        for k in range(nz):
            sop = UID(uid("instance", s_uid, k))
            ds.SOPInstanceUID = sop
            meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            t = (base_time + dt.timedelta(seconds=6 * k)).strftime("%H%M%S")
            ds.AcquisitionTime = t
            ds.ContentTime = t
            ds.ImagePositionPatient = [fmt_ds(c) for c in positions[k]]
            ds.SliceLocation = fmt_ds(positions[k][2])
            ds.PixelData = pixels[k].tobytes()
            buf = io.BytesIO()
            dcmwrite(buf, ds, enforce_file_format=True)
            path = out_dir / f"MR{series_number:03d}_{k + 1:04d}.dcm"
            write_atomic(path, buf.getvalue())
            written.append(path)
            paths.append(path)
    log.info("wrote %d synthetic MR instances (series %d) to %s", len(paths), series_number, out_dir)
    return paths


def write_labels(ph: Phantom, path: Path) -> Path:
    """Write the ground truth as ``.npz`` (no pickle): labels, spacing, origin, label_values, label_keys.

    Also ``label_names`` (display names), ``region`` and ``synthetic``.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    labs = [lab for lab in region_labels(ph.spec.region) if lab.value in ph.label_names]
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        labels=ph.labels,
        spacing=np.asarray(ph.spacing, np.float64),
        origin=np.asarray(ph.origin, np.float64),
        label_values=np.asarray([lab.value for lab in labs], np.uint8),
        label_keys=np.asarray([lab.key for lab in labs], dtype=np.str_),
        label_names=np.asarray([lab.display_name for lab in labs], dtype=np.str_),
        region=np.asarray(ph.spec.region),
        contrast=np.asarray(ph.spec.contrast),
        seed=np.asarray(ph.spec.seed, np.int64),
        synthetic=np.asarray(True),
    )
    write_atomic(path, buf.getvalue())
    return path


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """Read a labels ``.npz`` written by :func:`write_labels` (never unpickles)."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
