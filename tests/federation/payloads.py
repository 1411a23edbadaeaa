"""Hostile upload payloads for the federation tests: each would write a marker file if ever unpickled."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np


class WritesMarker:
    """Unpickling this object calls ``Path.write_text(marker, 'pwned')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.marker, "pwned"))


def pickle_payload(marker: Path) -> bytes:
    """A plain pickle (what Dafne's server would have unpickled)."""
    return pickle.dumps(WritesMarker(marker))


def dill_payload(marker: Path) -> bytes:
    """A dill pickle whose reconstruction runs a lambda serialized by value."""
    import dill

    class DillMarker:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return ((lambda p: Path(p).write_text("pwned")), (str(marker),))

    return bytes(dill.dumps(DillMarker(), recurse=True))


def npz_with_object_array(marker: Path) -> bytes:
    """A valid-looking .npz whose only member is an object array holding the pickle payload."""
    buf = io.BytesIO()
    np.savez(buf, w0000=np.array([WritesMarker(marker)], dtype=object))
    return buf.getvalue()
