"""``python -m dicom_node`` is ``laurel``."""

from dicom_node.cli import main

main()
