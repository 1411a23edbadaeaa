"""DICOM header text for the screen: always shown as plain text, never interpreted as rich text (no Qt).

PatientName, PatientID and descriptions come from the modality and can hold anything, including ``<b>`` or
``<!--``: a Qt widget that guesses "rich text" would hide or restyle part of a patient's identity. Widgets that
show these strings use ``Qt.PlainText``; where Qt insists on guessing (tooltips, window titles), the helpers
below make the text literal.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime

from review_station.domain import StudySummary


def person_name(pn: str) -> str:
    """A DICOM PN for people: ``SMITH^JOHN^A`` → ``SMITH, JOHN A`` (other characters untouched)."""
    return pn.replace("^", ", ", 1).replace("^", " ") if pn else ""


def dicom_date(da: str) -> str:
    """``20240102`` → ``2024-01-02`` (anything else unchanged)."""
    return f"{da[:4]}-{da[4:6]}-{da[6:]}" if len(da) == 8 and da.isdigit() else da


def local_time(iso: str | None, seconds: bool = True) -> str:
    """An ISO timestamp of the node in local time, ``YYYY-MM-DD HH:MM:SS`` (sorts as text)."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return iso
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Heading:
    """Who and what is on screen, as plain text: patient, patient ID, study."""

    patient: str
    patient_id: str
    study: str

    @classmethod
    def of(cls, s: StudySummary) -> Heading:
        """The heading of a node study."""
        return cls(
            patient=person_name(s.PatientName) or "(no patient name)",
            patient_id=s.PatientID or "(none)",
            study=" ".join(p for p in (s.StudyDescription or "Study", dicom_date(s.StudyDate)) if p),
        )

    @classmethod
    def local(cls, filename: str) -> Heading:
        """The heading of files opened offline."""
        return cls(patient=filename, patient_id="— (local file)", study="offline: no node, no approval")

    @property
    def lines(self) -> str:
        """Three lines for dialogs."""
        return f"Patient: {self.patient}\nPatient ID: {self.patient_id}\nStudy: {self.study}"

    @property
    def one_line(self) -> str:
        """One line for titles and the status bar."""
        return f"{self.patient} (ID {self.patient_id}) — {self.study}"


def window_title(text: str) -> str:
    """``text`` for ``setWindowTitle``: Qt reads ``[*]`` as the modified marker; ``[*][*]`` shows ``[*]``."""
    return text.replace("[*]", "[*][*]")


def plain_tooltip(text: str) -> str:
    """A tooltip that shows ``text`` literally (Qt guesses rich text in tooltips)."""
    return f"<p style='white-space:pre-wrap'>{html.escape(text)}</p>"
