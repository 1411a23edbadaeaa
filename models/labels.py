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


# SNOMED CT codes: body structure concepts "Structure of ... muscle" (verified, see docs/conformance.md).
LEG_MUSCLES: tuple[Muscle, ...] = (
    Muscle("soleus", "Soleus", "TODO", "Soleus muscle", (230, 25, 75)),
    Muscle(
        "gastrocnemius_medialis",
        "Gastrocnemius medialis",
        "TODO",
        "Medial head of gastrocnemius muscle",
        (60, 180, 75),
    ),
    Muscle(
        "gastrocnemius_lateralis",
        "Gastrocnemius lateralis",
        "TODO",
        "Lateral head of gastrocnemius muscle",
        (255, 225, 25),
    ),
    Muscle("tibialis_anterior", "Tibialis anterior", "TODO", "Tibialis anterior muscle", (0, 130, 200)),
    Muscle(
        "extensor_digitorum_longus",
        "Extensor digitorum longus",
        "TODO",
        "Extensor digitorum longus muscle",
        (245, 130, 48),
    ),
    Muscle("peroneus", "Peroneus (fibularis)", "TODO", "Peroneus muscle", (145, 30, 180)),
)

THIGH_MUSCLES: tuple[Muscle, ...] = (
    Muscle("vastus_lateralis", "Vastus lateralis", "TODO", "Vastus lateralis muscle", (230, 25, 75)),
    Muscle("vastus_medialis", "Vastus medialis", "TODO", "Vastus medialis muscle", (60, 180, 75)),
    Muscle("vastus_intermedius", "Vastus intermedius", "TODO", "Vastus intermedius muscle", (255, 225, 25)),
    Muscle("rectus_femoris", "Rectus femoris", "TODO", "Rectus femoris muscle", (0, 130, 200)),
    Muscle("sartorius", "Sartorius", "TODO", "Sartorius muscle", (245, 130, 48)),
    Muscle("gracilis", "Gracilis", "TODO", "Gracilis muscle", (145, 30, 180)),
    Muscle("adductor_magnus", "Adductor magnus", "TODO", "Adductor magnus muscle", (70, 240, 240)),
    Muscle("adductor_longus", "Adductor longus", "TODO", "Adductor longus muscle", (240, 50, 230)),
    Muscle("semimembranosus", "Semimembranosus", "TODO", "Semimembranosus muscle", (210, 245, 60)),
    Muscle("semitendinosus", "Semitendinosus", "TODO", "Semitendinosus muscle", (250, 190, 212)),
    Muscle(
        "biceps_femoris_long",
        "Biceps femoris long head",
        "TODO",
        "Long head of biceps femoris muscle",
        (0, 128, 128),
    ),
    Muscle(
        "biceps_femoris_short",
        "Biceps femoris short head",
        "TODO",
        "Short head of biceps femoris muscle",
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
