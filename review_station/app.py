"""Start the review station: the Qt application, the main window, the node client."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def run(node: str, token: str | None = None, volume: Path | None = None, labels: Path | None = None) -> int:
    """Open the window and run the Qt event loop; returns the exit code.

    With ``volume`` the station opens local files offline (no node); otherwise it connects to ``node``.
    """
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication

    from review_station.client import NodeClient
    from review_station.main_window import MainWindow

    QApplication.setAttribute(Qt.ApplicationAttribute.AA_EnableHighDpiScaling, True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Laurel review")
    client = None if volume is not None else NodeClient(node, token)
    window = MainWindow(client)
    window.show()
    if volume is not None:
        window.open_local(volume, labels)
    else:
        window.start()
    return int(app.exec_())
