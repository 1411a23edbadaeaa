"""Uploaded weights: an ``.npz`` of plain numeric arrays, read without ever unpickling.

The upload format (what :mod:`federation.client` writes): a zip made by ``np.savez`` whose members are
``w0000[_name].npy``, ``w0001[_name].npy``, … — one member per weight array of the model, in the model's
weight order. Members are read one by one with ``numpy.lib.format`` and ``allow_pickle=False``; the array
header is checked (no object, structured or non-float dtypes) before any data is read, and the unpacked
size is capped, so neither a pickle nor a zip bomb gets anywhere.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

MEMBER_RE = re.compile(r"^w(\d{4,6})(?:_[A-Za-z0-9_.:-]{1,200})?\.npy$")


class WeightsError(ValueError):
    """The uploaded weights are unusable; the message says what to fix (HTTP 422)."""


def read_weights(data: bytes, *, max_bytes: int) -> list[np.ndarray]:
    """Parse an uploaded ``.npz`` into arrays in index order; ``WeightsError`` for anything else.

    Never unpickles: object dtypes are refused from the array header, before the data is read.
    """
    if not data:
        raise WeightsError("the weights file is empty")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise WeightsError("weights must be an .npz file (np.savez of plain numeric arrays), not a pickle")
    arrays: dict[int, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if not infos:
                raise WeightsError("the .npz holds no arrays")
            if sum(i.file_size for i in infos) > max_bytes:
                raise WeightsError(f"the unpacked weights exceed {max_bytes} bytes")
            for info in infos:
                match = MEMBER_RE.match(info.filename)
                if match is None:
                    raise WeightsError(
                        f"unexpected member {info.filename[:80]!r}: name the arrays w0000, w0001, … in weight order"
                    )
                index = int(match.group(1))
                if index in arrays:
                    raise WeightsError(f"weight index {index} appears twice")
                with zf.open(info) as fh:
                    raw = fh.read(max_bytes - total + 1)
                total += len(raw)
                if total > max_bytes:
                    raise WeightsError(f"the unpacked weights exceed {max_bytes} bytes")
                arrays[index] = _read_member(raw, info.filename)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"the .npz is not a readable zip file: {exc}") from exc
    if sorted(arrays) != list(range(len(arrays))):
        raise WeightsError(f"weight indices must run 0..{len(arrays) - 1} without gaps")
    return [arrays[i] for i in range(len(arrays))]


def _read_member(raw: bytes, name: str) -> np.ndarray:
    fp = io.BytesIO(raw)
    try:
        major, minor = np.lib.format.read_magic(fp)
        if (major, minor) == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif (major, minor) == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise WeightsError(f"{name}: unsupported .npy format version {major}.{minor}")
    except WeightsError:
        raise
    except Exception as exc:  # a malformed header: ValueError, SyntaxError, …
        raise WeightsError(f"{name}: not a valid .npy array ({exc})") from exc
    if dtype.hasobject or dtype.fields is not None or dtype.kind != "f":
        raise WeightsError(f"{name}: dtype {dtype} refused; weights must be float arrays (no objects, no pickles)")
    fp.seek(0)
    try:
        array = np.lib.format.read_array(fp, allow_pickle=False)
    except Exception as exc:
        raise WeightsError(f"{name}: cannot read the array ({exc})") from exc
    if tuple(array.shape) != tuple(shape):
        raise WeightsError(f"{name}: truncated array")
    return np.ascontiguousarray(array)


def weight_specs(weights: Sequence[np.ndarray]) -> list[list[Any]]:
    """``[[shape...], dtype-string]`` for each array: what the registry records per version."""
    return [[list(map(int, w.shape)), np.dtype(w.dtype).str] for w in weights]


def check_weights(weights: Sequence[np.ndarray], specs: Sequence[Sequence[Any]]) -> None:
    """Shapes, dtypes and finiteness against the base version's; ``WeightsError`` says what differs."""
    if len(weights) != len(specs):
        raise WeightsError(f"expected {len(specs)} weight arrays (the base version's), got {len(weights)}")
    for i, (w, (shape, dtype)) in enumerate(zip(weights, specs, strict=True)):
        if list(w.shape) != list(shape):
            raise WeightsError(f"weight {i}: shape {list(w.shape)} differs from the base version's {list(shape)}")
        if np.dtype(w.dtype) != np.dtype(dtype):
            raise WeightsError(f"weight {i}: dtype {w.dtype} differs from the base version's {np.dtype(dtype)}")
        if not np.isfinite(w).all():
            raise WeightsError(f"weight {i}: contains NaN or infinite values")
