"""Start the review station: the Qt application, the main window, the node client, the safety net."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_NODE = "http://127.0.0.1:8080"


def run(node: str | None, token: str | None = None, volume: Path | None = None, labels: Path | None = None) -> int:
    """Open the window and run the Qt event loop; returns the exit code.

    With ``volume`` the station opens local files offline (no node); otherwise it connects to ``node`` (None:
    the node of the last session, else the local default). An unhandled exception keeps the open corrections
    on disk instead of ending the application (:func:`review_station.recovery.install_excepthook`).
    """
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication

    from review_station import preferences
    from review_station.client import NodeClient
    from review_station.main_window import MainWindow
    from review_station.recovery import RecoveryStore, install_excepthook

    QApplication.setAttribute(Qt.ApplicationAttribute.AA_EnableHighDpiScaling, True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("Laurel")
    app.setApplicationName("Laurel review")
    settings = preferences.app_settings()
    url = node or preferences.last_node(settings) or DEFAULT_NODE
    client = None if volume is not None else NodeClient(url, token)
    window = MainWindow(client, settings=settings, recovery=RecoveryStore())
    previous = install_excepthook(window)
    window.show()
    if volume is not None:
        window.open_local(volume, labels)
    else:
        window.start()
    try:
        return int(app.exec_())
    finally:
        sys.excepthook = previous
