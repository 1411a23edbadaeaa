"""DICOM objects ⇄ arrays: series volumes and DICOM-SEG; no database, no network."""
