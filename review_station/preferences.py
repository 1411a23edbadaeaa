"""Preferences kept between sessions with ``QSettings``: brush, opacity, layout, the last node.

The token is never stored. A window without a ``QSettings`` (tests, scripts) keeps nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PyQt5.QtCore import QByteArray, QSettings

if TYPE_CHECKING:
    from review_station.main_window import MainWindow

log = logging.getLogger(__name__)


def app_settings() -> QSettings:
    """The user's settings of the review station."""
    return QSettings("Laurel", "Laurel review")


def _get(settings: QSettings, key: str, default: Any, kind: type) -> Any:
    value = settings.value(key, default)
    try:
        return kind(value) if kind is not bool else value in (True, "true", "1", 1)
    except (TypeError, ValueError):
        return default


def last_node(settings: QSettings | None) -> str | None:
    """The node the station last connected to."""
    if settings is None:
        return None
    url = settings.value("node/url", None)
    return str(url) if url else None


def restore(window: MainWindow, settings: QSettings) -> None:
    """Apply the stored preferences to a new window."""
    page = window.review
    page.panel.radius_spin.setValue(_get(settings, "brush/radius", page.canvas.radius, int))
    page.panel.shape_combo.setCurrentText(_get(settings, "brush/shape", "round", str))
    page.panel.opacity_slider.setValue(_get(settings, "overlay/opacity", 50, int))
    page.acts["reformats"].setChecked(_get(settings, "layout/reformats", False, bool))
    geometry = settings.value("layout/geometry")
    if isinstance(geometry, QByteArray | bytes) and geometry:
        window.restoreGeometry(QByteArray(geometry))
    splitter = settings.value("layout/splitter")
    if isinstance(splitter, QByteArray | bytes) and splitter:
        page.splitter.restoreState(QByteArray(splitter))


def store(window: MainWindow, settings: QSettings) -> None:
    """Keep the window's preferences (called when it closes)."""
    page = window.review
    settings.setValue("brush/radius", page.canvas.radius)
    settings.setValue("brush/shape", page.canvas.shape)
    settings.setValue("overlay/opacity", page.panel.opacity_slider.value())
    settings.setValue("layout/reformats", page.acts["reformats"].isChecked())
    settings.setValue("layout/geometry", window.saveGeometry())
    settings.setValue("layout/splitter", page.splitter.saveState())
    if window.client is not None:
        settings.setValue("node/url", window.client.base_url)
    settings.sync()
