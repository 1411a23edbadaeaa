"""New models from a site's own labelled data: reading DICOM + SEG or NIfTI, training, the per-label report.

``laurel model create`` / ``evaluate`` / ``install`` (see :mod:`models.cli`) call :mod:`models.create.build`.
"""
