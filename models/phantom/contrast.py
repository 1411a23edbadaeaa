"""MR contrasts: relative tissue signals and plausible acquisition parameters per weighting.

Signals are relative to fat on the PD-weighted image (= 1). They follow the usual appearance at
1.5-3 T: on T1 fat and fatty marrow are very bright and muscle dark; on PD fat is bright and muscle
intermediate; on T2 with fat saturation fat and marrow are dark, muscle is intermediate-dark and
fluid and slow-flowing veins are bright. Cortical bone and tendon are dark on all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.phantom.anatomy import (
    AIR,
    CORTEX,
    FAT,
    FIBROUS,
    MARROW,
    MUSCLE,
    NERVE,
    SKIN,
    TISSUE_NAMES,
    VESSEL,
)


@dataclass(frozen=True)
class ContrastModel:
    """Relative signal of each tissue class, plus texture amplitudes and bias strength."""

    name: str
    signal: dict[int, float]
    muscle_texture: float
    fat_texture: float
    bias_strength: float

    def lut(self) -> np.ndarray:
        """Tissue class → signal, as a float32 lookup table."""
        table = np.zeros(len(TISSUE_NAMES), np.float32)
        for k, v in self.signal.items():
            table[k] = v
        return table


CONTRASTS: dict[str, ContrastModel] = {
    "pd": ContrastModel(
        "pd",
        {
            AIR: 0.0,
            SKIN: 0.62,
            FAT: 1.0,
            MUSCLE: 0.56,
            CORTEX: 0.03,
            MARROW: 0.9,
            FIBROUS: 0.1,
            VESSEL: 0.3,
            NERVE: 0.62,
        },
        muscle_texture=0.035,
        fat_texture=0.02,
        bias_strength=0.22,
    ),
    "t1": ContrastModel(
        "t1",
        {
            AIR: 0.0,
            SKIN: 0.42,
            FAT: 1.0,
            MUSCLE: 0.3,
            CORTEX: 0.02,
            MARROW: 0.93,
            FIBROUS: 0.06,
            VESSEL: 0.16,
            NERVE: 0.36,
        },
        muscle_texture=0.045,
        fat_texture=0.02,
        bias_strength=0.28,
    ),
    "t2fs": ContrastModel(
        "t2fs",
        {
            AIR: 0.0,
            SKIN: 0.36,
            FAT: 0.1,
            MUSCLE: 0.3,
            CORTEX: 0.02,
            MARROW: 0.13,
            FIBROUS: 0.04,
            VESSEL: 0.6,
            NERVE: 0.5,
        },
        muscle_texture=0.05,
        fat_texture=0.12,
        bias_strength=0.25,
    ),
}


def acquisition_parameters(contrast: str, rng: np.random.Generator) -> dict[str, object]:
    """DICOM MR acquisition attributes plausible for the weighting (turbo spin echo, 2D axial)."""
    field = float(rng.choice([1.5, 3.0]))
    common: dict[str, object] = {
        "MagneticFieldStrength": field,
        "ImagingFrequency": round(42.577478 * field, 6),
        "ImagedNucleus": "1H",
        "MRAcquisitionType": "2D",
        "ScanningSequence": ["SE"],
        "SequenceVariant": ["SK", "SP"],
        "NumberOfAverages": float(rng.choice([1.0, 2.0])),
        "PixelBandwidth": float(rng.choice([190.0, 220.0, 250.0, 300.0])),
        "FlipAngle": 90.0,
        "EchoNumbers": 1,
        "InversionTime": None,
        "ReceiveCoilName": "SYNTH_LEG_ARRAY",
        "TransmitCoilName": "BODY",
    }
    if contrast == "pd":
        spec = {
            "RepetitionTime": float(rng.uniform(2500, 3800)),
            "EchoTime": float(rng.uniform(18, 32)),
            "EchoTrainLength": int(rng.choice([6, 8, 10])),
            "ScanOptions": [""],
            "SequenceName": "*tse2d1_8",
            "ProtocolName": "SYNTHETIC PD TSE AX",
        }
    elif contrast == "t1":
        spec = {
            "RepetitionTime": float(rng.uniform(450, 720)),
            "EchoTime": float(rng.uniform(9, 16)),
            "EchoTrainLength": int(rng.choice([2, 3, 4])),
            "ScanOptions": [""],
            "SequenceName": "*tse2d1_3",
            "ProtocolName": "SYNTHETIC T1 TSE AX",
        }
    elif contrast == "t2fs":
        spec = {
            "RepetitionTime": float(rng.uniform(3500, 5500)),
            "EchoTime": float(rng.uniform(60, 90)),
            "EchoTrainLength": int(rng.choice([12, 14, 16])),
            "ScanOptions": ["FS"],
            "SequenceName": "*tse2d1_14",
            "ProtocolName": "SYNTHETIC T2 FS TSE AX",
        }
    else:  # pragma: no cover - PhantomSpec validates
        raise ValueError(f"unknown contrast {contrast!r}")
    spec["RepetitionTime"] = round(float(spec["RepetitionTime"]), 1)  # type: ignore[arg-type]
    spec["EchoTime"] = round(float(spec["EchoTime"]), 2)  # type: ignore[arg-type]
    return {**common, **spec}


def compose(
    tissue: np.ndarray,
    muscle: np.ndarray,
    fat_fraction: np.ndarray,
    texture: np.ndarray,
    model: ContrastModel,
    muscle_tone: np.ndarray,
) -> np.ndarray:
    """Signal of a rendered patch (before blur, bias and noise): tissue LUT, fat mixing, texture."""
    lut = model.lut()
    signal = lut[tissue]
    is_muscle = tissue == MUSCLE
    fat_sig = lut[FAT]
    tone = np.concatenate([[1.0], muscle_tone]).astype(np.float32)
    m_sig = lut[MUSCLE] * tone[muscle[is_muscle].astype(np.int64) + 1]
    ff = fat_fraction[is_muscle]
    tex_m = 1.0 + model.muscle_texture * texture[is_muscle]
    signal[is_muscle] = ((1.0 - ff) * m_sig + ff * fat_sig) * tex_m
    is_fat = (tissue == FAT) | (tissue == MARROW)
    signal[is_fat] *= 1.0 + model.fat_texture * texture[is_fat]
    return signal
