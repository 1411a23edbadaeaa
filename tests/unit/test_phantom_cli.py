"""``laurel phantom`` run as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[2]
LAUREL = REPO / ".venv" / "bin" / "laurel"


def laurel(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(LAUREL)] if LAUREL.exists() else [sys.executable, "-m", "dicom_node"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_phantom_command_writes_series_and_labels(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    res = laurel(
        "phantom", "--region", "leg", "--contrast", "t1", "--seed", "42", "--out", str(out),
        "--limbs", "right", "--fat-infiltration", "soleus=0.6,gastrocnemius_medialis=0.3",
        "--slices", "4", "--matrix", "256",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    files = sorted((out / "series").glob("*.dcm"))
    assert len(files) == 4
    assert "SYNTHETIC leg right T1 axial" in res.stdout and "labels.npz" in res.stdout
    ds = pydicom.dcmread(files[0])
    assert ds.PatientName == "SYNTHETIC^PHANTOM^LEG-00042" and ds.Rows == 256
    with np.load(out / "labels.npz", allow_pickle=False) as data:
        assert data["labels"].shape == (4, 256, 256)
        assert set(np.unique(data["labels"]).tolist()) == {0, 1, 2, 3, 4, 5, 6}


def test_phantom_command_writes_a_study_of_several_enhanced_series(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    res = laurel(
        "phantom", "--region", "thigh", "--contrast", "pd,t2fs", "--seed", "7", "--out", str(out),
        "--slices", "3", "--enhanced",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    files = sorted((out / "series").glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    assert [int(d.NumberOfFrames) for d in dss] == [3, 3]
    assert len({d.StudyInstanceUID for d in dss}) == 1
    assert [d.SeriesDescription for d in dss] == ["SYNTHETIC thigh PD axial", "SYNTHETIC thigh T2 FS axial"]


def test_phantom_command_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    res = laurel("phantom", "--region", "leg", "--contrast", "t1", "--seed", "1", "--out", str(out),
                 "--fat-infiltration", "vastus_lateralis=0.5")  # fmt: skip
    assert res.returncode == 2
    assert "unknown muscle 'vastus_lateralis'" in res.stderr
    assert not out.exists()
    res = laurel("phantom", "--region", "arm", "--contrast", "t1", "--seed", "1", "--out", str(out))
    assert res.returncode == 2 and "region" in res.stderr
    res = laurel("phantom", "--region", "leg", "--contrast", "t1", "--seed", "1", "--out", str(out),
                 "--fat-infiltration", "soleus:0.5")  # fmt: skip
    assert res.returncode == 2 and "MUSCLE=SEVERITY" in res.stderr
    assert not out.exists()


def test_phantom_command_does_not_mix_with_an_earlier_series(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    args = ["phantom", "--region", "leg", "--contrast", "pd", "--out", str(out), "--matrix", "256"]
    assert laurel(*args, "--seed", "1", "--slices", "4").returncode == 0
    res = laurel(*args, "--seed", "2", "--slices", "3")
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert len(list((out / "series").glob("*.dcm"))) == 4
    res = laurel(*args, "--seed", "2", "--slices", "3", "--overwrite")
    assert res.returncode == 0, res.stderr
    dss = [pydicom.dcmread(p) for p in (out / "series").glob("*.dcm")]
    assert len(dss) == 3 and {str(d.PatientID) for d in dss} == {"LAUREL-PHANTOM-LEG-00002"}
