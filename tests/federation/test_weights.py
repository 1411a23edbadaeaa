"""Uploaded weights are read as plain float arrays; pickles, dill and zip bombs never get anywhere."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from federation.client import encode_weights
from federation.server.weights import WeightsError, check_weights, read_weights, weight_specs
from tests.federation.payloads import dill_payload, npz_with_object_array, pickle_payload

MAX = 10 * 2**20


def _weights() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.normal(size=(3, 3, 1, 4)).astype(np.float32),
        np.zeros(4, np.float32),
        np.ones((4, 2), np.float32),
    ]


def test_round_trip_keeps_order_values_and_dtypes() -> None:
    ws = _weights()
    got = read_weights(encode_weights(ws, ["enc0/kernel", "enc0/bias", "head/kernel"]), max_bytes=MAX)
    assert [g.dtype for g in got] == [w.dtype for w in ws]
    for g, w in zip(got, ws, strict=True):
        np.testing.assert_array_equal(g, w)
    check_weights(got, weight_specs(ws))


@pytest.mark.parametrize("make", [pickle_payload, dill_payload, npz_with_object_array])
def test_hostile_payloads_are_refused_without_unpickling(tmp_path: Path, make: object) -> None:
    control, marker = tmp_path / "control", tmp_path / "marker"
    # The payload is live: unpickling it (what we must never do) writes the file.
    live = make(control)  # type: ignore[operator]
    if live.startswith(b"PK"):
        with np.load(io.BytesIO(live), allow_pickle=True) as npz:
            npz["w0000"]
    else:
        import dill

        dill.loads(live)  # noqa: S301 - the control: proves the payload is live
    assert control.read_text() == "pwned"

    with pytest.raises(WeightsError) as err:
        read_weights(make(marker), max_bytes=MAX)  # type: ignore[operator]
    assert "pickle" in str(err.value) or "dtype object" in str(err.value)
    assert not marker.exists()


def test_member_names_must_be_weight_indices() -> None:
    buf = io.BytesIO()
    np.savez(buf, image=np.zeros((4, 4), np.float32))  # pixels under another name
    with pytest.raises(WeightsError, match=r"unexpected member 'image\.npy'"):
        read_weights(buf.getvalue(), max_bytes=MAX)


def test_gaps_and_non_float_dtypes_are_refused() -> None:
    buf = io.BytesIO()
    np.savez(buf, w0000=np.zeros(2, np.float32), w0002=np.zeros(2, np.float32))
    with pytest.raises(WeightsError, match="without gaps"):
        read_weights(buf.getvalue(), max_bytes=MAX)
    buf = io.BytesIO()
    np.savez(buf, w0000=np.zeros((8, 8), np.uint16))
    with pytest.raises(WeightsError, match="must be float"):
        read_weights(buf.getvalue(), max_bytes=MAX)


def test_zip_bomb_is_capped_before_reading() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("w0000.npy", "w") as fh:
        np.lib.format.write_array(fh, np.zeros(2**22, np.float32))  # 16 MiB of zeros, compresses to ~16 kB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(WeightsError, match="exceed"):
        read_weights(buf.getvalue(), max_bytes=2**20)


def test_not_a_zip_and_empty() -> None:
    with pytest.raises(WeightsError, match="empty"):
        read_weights(b"", max_bytes=MAX)
    with pytest.raises(WeightsError, match="not a pickle"):
        read_weights(pickle.dumps([np.zeros(3)]), max_bytes=MAX)


def test_check_against_base_specs_names_what_differs() -> None:
    ws = _weights()
    specs = weight_specs(ws)
    with pytest.raises(WeightsError, match="expected 3 weight arrays"):
        check_weights(ws[:2], specs)
    bad_shape = [np.zeros((3, 3, 1, 5), np.float32), *ws[1:]]
    with pytest.raises(WeightsError, match=r"weight 0: shape \[3, 3, 1, 5\]"):
        check_weights(bad_shape, specs)
    with pytest.raises(WeightsError, match="weight 1: dtype float64"):
        check_weights([ws[0], ws[1].astype(np.float64), ws[2]], specs)
    nan = [ws[0], np.array([0, np.nan, 0, 0], np.float32), ws[2]]
    with pytest.raises(WeightsError, match="weight 1: contains NaN"):
        check_weights(nan, specs)
