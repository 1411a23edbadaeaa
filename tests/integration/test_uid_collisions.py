"""Two patients whose series share a SeriesInstanceUID (a sender that reuses UIDs) are never mixed: DCMTK
storescu sends both, the node stores the first and refuses every image of the second with a failure status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.core.db import Series, Study, session_scope
from tests.peers import make_image, storescu

pytestmark = pytest.mark.peers


def test_two_patients_with_one_series_uid_are_never_mixed(node: Any, tmp_path: Path) -> None:
    series_uid = generate_uid()
    files: dict[str, list[Path]] = {"A": [], "B": []}
    for patient, study_uid in (("A", generate_uid()), ("B", generate_uid())):
        for i in range(3):
            ds = make_image(study_uid, series_uid, instance_number=i + 1, patient_id=f"SYN-{patient}")
            path = tmp_path / f"{patient}{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files[patient].append(path)
    first = storescu(node.port, files["A"])
    assert first.returncode == 0, first.stderr
    second = storescu(node.port, files["B"], extra=["-v"])
    assert "CannotUnderstand" in second.stdout + second.stderr  # storescu reports the failure status (0xC000)
    with session_scope(node.engine) as session:
        assert [s.PatientID for s in session.scalars(select(Study))] == ["SYN-A"]
        (series,) = session.scalars(select(Series)).all()
        assert len(series.instances) == 3
