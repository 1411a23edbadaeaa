"""The Enhanced MR Image Storage variant: one multi-frame instance with shared and per-frame groups.

Shared functional groups carry what is the same for every frame (pixel measures, orientation, anatomy,
MR timing, echo, coils, averages, frame type); per-frame groups carry the frame content (dimension
index values) and the plane position. Dimensions: stack id and in-stack position.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from models.phantom.dicom_io import (
    ENHANCED_MR_IMAGE_STORAGE,
    MANUFACTURER,
    StudyInfo,
    common_attributes,
    fmt_ds,
    laterality,
    series_uid,
    to_uint16,
    uid,
    window,
    write_atomic,
)
from models.phantom.spec import Phantom

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

ANATOMY = {"leg": ("30021000", "Lower leg"), "thigh": ("68367000", "Thigh")}
ACQUISITION_CONTRAST = {"pd": "PROTON_DENSITY", "t1": "T1", "t2fs": "T2"}


def _item(**attrs: object) -> Dataset:
    from pydicom.dataset import Dataset

    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _shared_groups(ph: Phantom, wc: float, ww: float) -> Dataset:
    from pydicom.sequence import Sequence

    acq = ph.acquisition
    dz, dy, dx = ph.spacing
    n = ph.shape[2]
    code, meaning = ANATOMY[ph.spec.region]
    frame_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    field_mhz = float(acq["ImagingFrequency"])  # type: ignore[arg-type]
    return _item(
        PixelMeasuresSequence=Sequence(
            [
                _item(
                    PixelSpacing=[fmt_ds(dy), fmt_ds(dx)],
                    SliceThickness=fmt_ds(dz),
                    SpacingBetweenSlices=fmt_ds(dz),
                )
            ]
        ),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        FrameAnatomySequence=Sequence(
            [
                _item(
                    AnatomicRegionSequence=Sequence(
                        [_item(CodeValue=code, CodingSchemeDesignator="SCT", CodeMeaning=meaning)]
                    ),
                    FrameLaterality=laterality(ph),
                )
            ]
        ),
        PixelValueTransformationSequence=Sequence([_item(RescaleIntercept=0, RescaleSlope=1, RescaleType="US")]),
        FrameVOILUTSequence=Sequence(
            [
                _item(
                    WindowCenter=fmt_ds(wc),
                    WindowWidth=fmt_ds(ww),
                    WindowCenterWidthExplanation="SYNTHETIC body window",
                )
            ]
        ),
        MRImageFrameTypeSequence=Sequence(
            [
                _item(
                    FrameType=frame_type,
                    PixelPresentation="MONOCHROME",
                    VolumetricProperties="VOLUME",
                    VolumeBasedCalculationTechnique="NONE",
                    ComplexImageComponent="MAGNITUDE",
                    AcquisitionContrast=ACQUISITION_CONTRAST[ph.spec.contrast],
                )
            ]
        ),
        MRTimingAndRelatedParametersSequence=Sequence(
            [
                _item(
                    RepetitionTime=acq["RepetitionTime"],
                    FlipAngle=acq["FlipAngle"],
                    EchoTrainLength=acq["EchoTrainLength"],
                    RFEchoTrainLength=acq["EchoTrainLength"],
                    GradientEchoTrainLength=0,
                    SpecificAbsorptionRateSequence=Sequence(
                        [
                            _item(
                                SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                SpecificAbsorptionRateValue=0.8,
                            )
                        ]
                    ),
                    OperatingModeSequence=Sequence(
                        [
                            _item(OperatingModeType=mode, OperatingMode="IEC_NORMAL")
                            for mode in ("STATIC FIELD", "RF", "GRADIENT")
                        ]
                    ),
                )
            ]
        ),
        MRFOVGeometrySequence=Sequence(
            [
                _item(
                    InPlanePhaseEncodingDirection="ROW",
                    MRAcquisitionFrequencyEncodingSteps=n,
                    MRAcquisitionPhaseEncodingStepsInPlane=n,
                    PercentSampling=100.0,
                    PercentPhaseFieldOfView=100.0,
                )
            ]
        ),
        MREchoSequence=Sequence([_item(EffectiveEchoTime=acq["EchoTime"])]),
        MRModifierSequence=Sequence(
            [
                _item(
                    InversionRecovery="NO",
                    SpectrallySelectedExcitation="NONE",
                    FlowCompensation="NONE",
                    T2Preparation="NO",
                    SpatialPresaturation="NONE",
                    PartialFourier="NO",
                    ParallelAcquisition="NO",
                )
            ]
        ),
        MRImagingModifierSequence=Sequence(
            [
                _item(
                    MagnetizationTransfer="NONE",
                    BloodSignalNulling="NO",
                    Tagging="NONE",
                    TransmitterFrequency=field_mhz,
                    PixelBandwidth=acq["PixelBandwidth"],
                )
            ]
        ),
        MRReceiveCoilSequence=Sequence(
            [
                _item(
                    ReceiveCoilName=acq["ReceiveCoilName"],
                    ReceiveCoilManufacturerName=MANUFACTURER,
                    ReceiveCoilType="VOLUME",
                    QuadratureReceiveCoil="NO",
                )
            ]
        ),
        MRTransmitCoilSequence=Sequence(
            [
                _item(
                    TransmitCoilName=acq["TransmitCoilName"],
                    TransmitCoilManufacturerName=MANUFACTURER,
                    TransmitCoilType="BODY",
                )
            ]
        ),
        MRAveragesSequence=Sequence([_item(NumberOfAverages=acq["NumberOfAverages"])]),
    )


def write_enhanced(ph: Phantom, out_dir: Path, *, study: StudyInfo, series_number: int) -> list[Path]:
    """Write ``ph`` as one Enhanced MR Image Storage instance; returns ``[path]``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.sequence import Sequence
    from pydicom.tag import Tag
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    s_uid = series_uid(ph, study, series_number, True)
    sop = UID(uid("instance", s_uid, "enhanced"))
    acq = ph.acquisition
    nz, ny, nx = ph.shape
    wc, ww = window(ph.image)
    ds = Dataset()
    for keyword, v in common_attributes(ph, study, series_number, s_uid).items():
        setattr(ds, keyword, v)
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.InstanceCreationDate = study.StudyDate
    ds.InstanceCreationTime = ds.SeriesTime
    start = dt.datetime.strptime(f"{study.StudyDate}{ds.SeriesTime}", "%Y%m%d%H%M%S")
    ds.InstanceNumber = 1
    ds.ContentDate = study.StudyDate
    ds.ContentTime = ds.SeriesTime
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = start.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDuration = float(6 * nz)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.PresentationLUTShape = "IDENTITY"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = ACQUISITION_CONTRAST[ph.spec.contrast]
    ds.ContentQualification = "RESEARCH"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = acq["MagneticFieldStrength"]
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImageComments = "SYNTHETIC phantom image (Laurel); ground truth in labels.npz"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.AcquisitionContextSequence = Sequence()
    # MR pulse sequence module
    ds.PulseSequenceName = str(acq["SequenceName"]).lstrip("*").upper()[:16]
    ds.MRAcquisitionType = "2D"
    ds.EchoPulseSequence = "SPIN"
    ds.MultipleSpinEcho = "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "FAT" if ph.spec.contrast == "t2fs" else "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "PARTIAL"
    ds.NumberOfKSpaceTrajectories = 1
    # image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = nz
    # dimensions: stack, position in stack
    dim_uid = uid("dimension-organization", s_uid)
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence(
        [
            _item(
                DimensionOrganizationUID=dim_uid,
                DimensionIndexPointer=Tag("StackID"),
                FunctionalGroupPointer=Tag("FrameContentSequence"),
                DimensionDescriptionLabel="Stack ID",
            ),
            _item(
                DimensionOrganizationUID=dim_uid,
                DimensionIndexPointer=Tag("InStackPositionNumber"),
                FunctionalGroupPointer=Tag("FrameContentSequence"),
                DimensionDescriptionLabel="In-Stack Position Number",
            ),
        ]
    )
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(ph, wc, ww)])
    frames = []
    for k, pos in enumerate(ph.slice_positions()):
        when = (start + dt.timedelta(seconds=6 * k)).strftime("%Y%m%d%H%M%S")
        frames.append(
            _item(
                FrameContentSequence=Sequence(
                    [
                        _item(
                            FrameAcquisitionNumber=k + 1,
                            FrameReferenceDateTime=when,
                            FrameAcquisitionDateTime=when,
                            FrameAcquisitionDuration=6000.0,
                            StackID="1",
                            InStackPositionNumber=k + 1,
                            DimensionIndexValues=[1, k + 1],
                        )
                    ]
                ),
                PlanePositionSequence=Sequence([_item(ImagePositionPatient=[fmt_ds(c) for c in pos])]),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = to_uint16(ph.image).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENHANCED_MR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "LAUREL_PHANTOM"
    ds.file_meta = meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    path = out_dir / f"EMR{series_number:03d}.dcm"
    write_atomic(path, buf.getvalue())
    log.info("wrote a synthetic Enhanced MR instance of %d frames (series %d) to %s", nz, series_number, out_dir)
    return [path]
