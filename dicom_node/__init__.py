"""Laurel's on-site DICOM node: SCP, durable storage, jobs, autosegmentation, review queue, write-back."""
