"""Every command of the review page as a ``QAction``: text, shortcuts (Dafne's where Dafne has one), tooltip.

Dafne: arrows/wheel slices, Shift paint, Ctrl erase, n/b propagate, -/y/z smaller, +/x bigger, Ctrl+Z undo,
Ctrl+Y redo, Ctrl+G go to image. Laurel adds: 1…9, 0 and Tab / Shift+Tab choose the muscle, Alt+click picks
it from the image, Ctrl+Enter approves and opens the next study.
"""

from __future__ import annotations

from PyQt5.QtCore import QObject, Qt
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import QAction, QActionGroup

from review_station.panel import MUSCLE_KEYS

# name: (text, shortcuts, tip)
ACTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "tool_paint": ("Paint", ("P",), "paint the active muscle (or hold Shift)"),
    "tool_erase": ("Erase", ("E",), "erase the active muscle (or hold Ctrl)"),
    "tool_pan": ("Pan", (), "drag to move the image (or middle-drag)"),
    "tool_zoom": ("Zoom", (), "drag up/down to zoom (or Alt+wheel)"),
    "brush_bigger": ("Bigger brush", ("+", "=", "X"), "increase the brush radius"),
    "brush_smaller": ("Smaller brush", ("-", "Y", "Z"), "decrease the brush radius"),
    "grow": ("Grow", ("G",), "grow the active muscle by one pixel into unlabelled pixels"),
    "shrink": ("Shrink", ("Shift+G",), "shrink the active muscle by one pixel"),
    "fill_holes": ("Fill holes", (), "fill the holes of the active muscle"),
    "remove_islands": ("Remove islands", (), "clear small separate pieces"),
    "smooth": ("Smooth", ("S",), "smooth the outline of the active muscle (never takes other muscles' pixels)"),
    "lock": ("Lock / unlock", ("L",), "lock the active muscle: no tool changes its pixels"),
    "interpolate": ("Interpolate", ("I",), "redraw this slice from the labelled slices above and below"),
    "interpolate_block": (
        "Interpolate block", ("Shift+I",), "fill every slice of the gap between two labelled slices",
    ),
    "propagate_back": ("◀ Propagate (B)", ("B",), "carry this slice's labels to the previous slice"),
    "propagate_forward": ("Propagate (N) ▶", ("N",), "carry this slice's labels to the next slice"),
    "undo": ("Undo", ("Ctrl+Z",), "undo the last edit"),
    "redo": ("Redo", ("Ctrl+Y", "Ctrl+Shift+Z"), "redo the last undone edit"),
    "next_muscle": ("Next muscle", ("Tab",), "make the next muscle of the list active"),
    "previous_muscle": ("Previous muscle", ("Shift+Tab",), "make the previous muscle active"),
    "overlay": ("Show muscles", ("O",), "show or hide every muscle"),
    "goto": ("Go to slice…", ("Ctrl+G",), "jump to a slice number"),
    "fit": ("Fit to window", ("F",), "zoom so the whole slice fits"),
    "reset_window": ("Reset window/level", ("W",), "back to the automatic window"),
    "next_preset": ("Next window preset", ("Shift+W",), "cycle through the window/level presets"),
    "show_draft": ("Show draft (D)", ("D",), "show the model's draft instead of your labels (read only)"),
    "show_difference": ("Differences", ("Shift+D",), "mark the pixels where your labels differ from the draft"),
    "reformats": ("Coronal / sagittal", ("R",), "show coronal and sagittal reformats beside the axial view"),
    "statistics": ("Statistics…", (), "volume and intensity per muscle, CSV export"),
    "approve": ("Approve…", (), "approve the corrected labels (asks for confirmation)"),
    "approve_next": (
        "Approve && next…", ("Ctrl+Return", "Ctrl+Enter"),
        "approve (asks for confirmation), then open the next study pending review",
    ),
    "reject": ("Reject…", (), "reject the study (asks for a reason)"),
    "amend": ("Amend…", (), "reopen this approved study to correct it again (asks for a reason)"),
    "resegment": (
        "New draft of this series…", (),
        "images arrived after the draft: a new draft over every image (your corrections are set aside)",
    ),
}  # fmt: skip
for _i, _key in enumerate(MUSCLE_KEYS):
    ACTIONS[f"muscle_{_i + 1}"] = (f"Muscle {_i + 1} of the list", (_key,), f"make muscle {_i + 1} active")

CHECKABLE = ("overlay", "show_draft", "show_difference", "reformats")
TOOLS = ("tool_paint", "tool_erase", "tool_pan", "tool_zoom")
EDITING = (
    "grow", "shrink", "fill_holes", "remove_islands", "smooth", "interpolate", "interpolate_block",
    "propagate_back", "propagate_forward", "undo", "redo",
)  # fmt: skip


def make_actions(parent: QObject) -> dict[str, QAction]:
    """The page's actions (window-wide shortcuts; enabled only while the page is shown)."""
    acts: dict[str, QAction] = {}
    for name, (text, keys, tip) in ACTIONS.items():
        a = QAction(text, parent)
        if keys:
            a.setShortcuts([QKeySequence(k) for k in keys])
            a.setToolTip(f"{tip} ({', '.join(keys)})")
        else:
            a.setToolTip(tip)
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        acts[name] = a
    group = QActionGroup(parent)
    for name in TOOLS:
        acts[name].setCheckable(True)
        group.addAction(acts[name])
    acts["tool_paint"].setChecked(True)
    for name in CHECKABLE:
        acts[name].setCheckable(True)
    acts["overlay"].setChecked(True)
    return acts
