"""``python -m dicom_node`` is ``laurel``."""

from dicom_node.cli.main import main

main()
