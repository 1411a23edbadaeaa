"""The muscle catalogue: names, SNOMED CT codes and display colours of the labelled structures.

One place for the phantom, the models, the DICOM-SEG writer and the review station. Label values in a
both-limb label volume are ``1..n`` for the patient's right side and ``n+1..2n`` for the left side, in
catalogue order; 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Region = Literal["leg", "thigh"]
Side = Literal["right", "left"]
SIDES: tuple[Side, Side] = ("right", "left")


@dataclass(frozen=True)
class Muscle:
    """A muscle as coded in DICOM-SEG (SNOMED CT, scheme SCT) and drawn in the review station."""

    key: str
    name: str
    snomed_code: str
    snomed_meaning: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Label:
    """One value of a label volume: a muscle on one side."""

    value: int
    muscle: Muscle
    side: Side

    @property
    def key(self) -> str:
        """Machine name, e.g. ``soleus_right``."""
        return f"{self.muscle.key}_{self.side}"

    @property
    def display_name(self) -> str:
        """Human name, e.g. ``Soleus (right)``."""
        return f"{self.muscle.name} ({self.side})"


# SNOMED CT codes: body structure concepts "Structure of ... muscle" where a public source gave one;
# the generic "Skeletal muscle" concept elsewhere (see docs/conformance.md, "Known limitations").
# Sources (public material; this sandbox cannot reach a SNOMED CT browser):
#  1403006 "Structure of vastus lateralis muscle": FHIR R4 ValueSet approach-site-codes (SNOMED CT body
#      structures, display "Vastus lateralis muscle") and a FHIR IG profile of intramuscular injection sites.
#  3478008 "Structure of vastus medialis muscle", 2577006 "Structure of gracilis muscle": the same FHIR R4
#      ValueSet expansion.
#  72226001 "Rectus femoris structure": one source only (an EHR's SNOMED CT site table); to verify.
#  127954009 "Skeletal muscle" (G): pydicom's DICOM PS3.16 SCT dictionary, TotalSegmentator's SNOMED mapping.
#      A generic but correct placeholder wherever no code for the specific muscle (for the gastrocnemius
#      heads: neither for the head nor for the parent muscle) was found in a source. The SEG still names
#      the muscle (SegmentLabel, TrackingID); replace with the "Structure of ... muscle" code once verified.
LEG_MUSCLES: tuple[Muscle, ...] = (
    Muscle("soleus", "Soleus", "127954009", "Skeletal muscle", (230, 25, 75)),
    Muscle(
        "gastrocnemius_medialis",
        "Gastrocnemius medialis",
        "127954009",  # generic (G): no code found for the medial head nor for gastrocnemius itself
        "Skeletal muscle",
        (60, 180, 75),
    ),
    Muscle(
        "gastrocnemius_lateralis",
        "Gastrocnemius lateralis",
        "127954009",  # generic (G): no code found for the lateral head nor for gastrocnemius itself
        "Skeletal muscle",
        (255, 225, 25),
    ),
    Muscle("tibialis_anterior", "Tibialis anterior", "127954009", "Skeletal muscle", (0, 130, 200)),
    Muscle(
        "extensor_digitorum_longus",
        "Extensor digitorum longus",
        "127954009",  # generic (G)
        "Skeletal muscle",
        (245, 130, 48),
    ),
    Muscle("peroneus", "Peroneus (fibularis)", "127954009", "Skeletal muscle", (145, 30, 180)),
)

THIGH_MUSCLES: tuple[Muscle, ...] = (
    Muscle("vastus_lateralis", "Vastus lateralis", "1403006", "Vastus lateralis muscle", (230, 25, 75)),
    Muscle("vastus_medialis", "Vastus medialis", "3478008", "Vastus medialis muscle", (60, 180, 75)),
    Muscle("vastus_intermedius", "Vastus intermedius", "127954009", "Skeletal muscle", (255, 225, 25)),
    Muscle("rectus_femoris", "Rectus femoris", "72226001", "Rectus femoris muscle", (0, 130, 200)),
    Muscle("sartorius", "Sartorius", "127954009", "Skeletal muscle", (245, 130, 48)),
    Muscle("gracilis", "Gracilis", "2577006", "Gracilis muscle", (145, 30, 180)),
    Muscle("adductor_magnus", "Adductor magnus", "127954009", "Skeletal muscle", (70, 240, 240)),
    Muscle("adductor_longus", "Adductor longus", "127954009", "Skeletal muscle", (240, 50, 230)),
    Muscle("semimembranosus", "Semimembranosus", "127954009", "Skeletal muscle", (172, 255, 89)),
    Muscle("semitendinosus", "Semitendinosus", "127954009", "Skeletal muscle", (250, 190, 212)),
    Muscle(
        "biceps_femoris_long",
        "Biceps femoris long head",
        "127954009",  # generic (G)
        "Skeletal muscle",
        (0, 128, 128),
    ),
    Muscle(
        "biceps_femoris_short",
        "Biceps femoris short head",
        "127954009",  # generic (G)
        "Skeletal muscle",
        (220, 190, 255),
    ),
)

_BY_REGION: dict[str, tuple[Muscle, ...]] = {"leg": LEG_MUSCLES, "thigh": THIGH_MUSCLES}


def muscles(region: str) -> tuple[Muscle, ...]:
    """The muscles of one limb for ``region`` ('leg' or 'thigh'), in label order."""
    try:
        return _BY_REGION[region]
    except KeyError:
        raise ValueError(f"unknown region {region!r}; expected 'leg' or 'thigh'") from None


def region_labels(region: str) -> list[Label]:
    """All labels of a both-limb volume: right side ``1..n``, then left side ``n+1..2n``."""
    ms = muscles(region)
    return [Label(i + 1 + s * len(ms), m, side) for s, side in enumerate(SIDES) for i, m in enumerate(ms)]


def label_names(region: str) -> dict[int, str]:
    """``{value: key}`` for a both-limb label volume, e.g. ``{1: 'soleus_right', ...}``."""
    return {lab.value: lab.key for lab in region_labels(region)}
