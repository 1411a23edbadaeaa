"""Synthetic MR phantom of the lower leg and thigh (SYNTHETIC data, no patient).

``generate(PhantomSpec(...))`` gives a :class:`Phantom` (image, labels, geometry); ``write_series`` writes
it as a DICOM MR series, ``write_labels`` its ground truth; ``cohort(name)`` lists reproducible subjects.
"""

from __future__ import annotations

from models.phantom.cohorts import COHORTS, cohort, cohort_names
from models.phantom.dicom_io import StudyInfo, read_labels, write_labels, write_series
from models.phantom.generate import generate
from models.phantom.spec import Phantom, PhantomSpec

__all__ = [
    "COHORTS",
    "Phantom",
    "PhantomSpec",
    "StudyInfo",
    "cohort",
    "cohort_names",
    "generate",
    "read_labels",
    "write_labels",
    "write_series",
]
