"""The phantom's spec, determinism, DICOM output (read back with pydicom), ground truth file and cohorts."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest

from models.labels import label_names
from models.phantom import (
    COHORTS,
    Phantom,
    PhantomSpec,
    StudyInfo,
    cohort,
    cohort_names,
    generate,
    read_labels,
    write_labels,
    write_series,
)


@cache
def small(region: str = "leg", contrast: str = "t1", seed: int = 5, limbs: str = "both") -> Phantom:
    return generate(
        PhantomSpec(region, contrast, seed, limbs=limbs, n_slices=5, matrix=288 if region == "leg" else 432)  # type: ignore[arg-type]
    )


def read_series(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"region": "arm"}, "region"),
        ({"contrast": "flair"}, "contrast"),
        ({"limbs": "three"}, "limbs"),
        ({"seed": -1}, "seed"),
        ({"n_slices": 0}, "n_slices"),
        ({"matrix": 32}, "matrix"),
        ({"slice_thickness": 40.0}, "slice_thickness"),
        ({"snr": 0.0}, "snr"),
        ({"fat_infiltration": {"biceps": 0.5}}, "unknown muscle"),
        ({"fat_infiltration": {"soleus": 1.5}}, "within 0..1"),
    ],
)
def test_spec_refuses_bad_input(changes: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"region": "leg", "contrast": "t1", "seed": 1, **changes}
    with pytest.raises(ValueError, match=message):
        PhantomSpec(**args)  # type: ignore[arg-type]


def test_spec_is_hashable_and_compares_by_value() -> None:
    a = PhantomSpec("leg", "t1", 3, fat_infiltration={"soleus": 0.5})
    b = PhantomSpec("leg", "t1", 3, fat_infiltration={"soleus": 0.5})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != PhantomSpec("leg", "t1", 3)


def test_defaults_are_drawn_within_the_published_ranges() -> None:
    for seed in range(12):
        ph = generate(PhantomSpec("thigh" if seed % 2 else "leg", "pd", seed, n_slices=2))
        dz, dy, dx = ph.spacing
        assert 5.0 <= dz <= 8.0
        assert dy == dx and 0.95 <= dx <= 1.2
        assert 256 <= ph.shape[1] == ph.shape[2] <= 432
    drawn = [generate(PhantomSpec("leg", "pd", s, matrix=256)).shape[0] for s in range(3)]
    assert all(20 <= n <= 40 for n in drawn)


def test_subject_fits_a_fixed_small_field_of_view() -> None:
    ph = generate(PhantomSpec("thigh", "pd", 8, n_slices=3, matrix=256, pixel_spacing=1.0))
    assert ph.shape == (3, 256, 256) and ph.spacing[1:] == (1.0, 1.0)
    assert ph.tissue is not None
    body = ph.tissue > 0
    assert not body[:, :3, :].any() and not body[:, -3:, :].any()
    assert not body[:, :, :3].any() and not body[:, :, -3:].any()
    assert float(ph.acquisition["subject_scale"]) < 1.0  # type: ignore[arg-type]
    # with only the matrix fixed, the pixels grow instead and the subject keeps its size
    wide = generate(PhantomSpec("thigh", "pd", 8, n_slices=3, matrix=256))
    assert wide.spacing[1] > 1.2 and float(wide.acquisition["subject_scale"]) == 1.0  # type: ignore[arg-type]


def test_same_spec_same_arrays_other_seed_other_subject() -> None:
    spec = PhantomSpec("leg", "pd", 9, n_slices=4, matrix=256)
    a, b = generate(spec), generate(spec)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.origin == b.origin and a.spacing == b.spacing
    c = generate(PhantomSpec("leg", "pd", 10, n_slices=4, matrix=256))
    assert not np.array_equal(a.labels, c.labels)


def test_same_spec_writes_the_same_bytes(tmp_path: Path) -> None:
    spec = PhantomSpec("leg", "t2fs", 4, n_slices=3, matrix=256)
    first = write_series(generate(spec), tmp_path / "a")
    second = write_series(generate(spec), tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second]
    for p, q in zip(first, second, strict=True):
        assert p.read_bytes() == q.read_bytes()
    other = write_series(generate(PhantomSpec("leg", "t2fs", 5, n_slices=3, matrix=256)), tmp_path / "c")
    assert pydicom.dcmread(other[0]).SOPInstanceUID != pydicom.dcmread(first[0]).SOPInstanceUID


def test_series_reads_back_with_the_intended_geometry(tmp_path: Path) -> None:
    ph = small()
    paths = write_series(ph, tmp_path)
    dss = read_series(tmp_path)
    assert len(paths) == len(dss) == ph.shape[0]
    dz, dy, dx = ph.spacing
    for k, ds in enumerate(dss):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], np.add(ph.origin, (0, 0, k * dz)), atol=1e-3)
        assert np.allclose([float(v) for v in ds.PixelSpacing], (dy, dx), atol=1e-4)
        assert float(ds.SliceThickness) == pytest.approx(dz)
        assert float(ds.SliceLocation) == pytest.approx(ph.origin[2] + k * dz, abs=1e-3)
        assert ds.pixel_array.dtype == np.uint16
        assert np.array_equal(ds.pixel_array, np.clip(np.rint(ph.image[k]), 0, 4095).astype(np.uint16))
    assert len({ds.SOPInstanceUID for ds in dss}) == len(dss)
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1
    assert len({ds.FrameOfReferenceUID for ds in dss}) == 1
    assert float(dss[1].ImagePositionPatient[2]) > float(dss[0].ImagePositionPatient[2])  # towards the head


def test_series_is_clearly_synthetic_and_routable(tmp_path: Path) -> None:
    for region in ("leg", "thigh"):
        write_series(small(region, "pd"), tmp_path / region)
        ds = read_series(tmp_path / region)[0]
        assert str(ds.PatientName) == f"SYNTHETIC^PHANTOM^{region.upper()}-00005"
        assert ds.PatientID.startswith("LAUREL-PHANTOM-")
        assert "SYNTHETIC" in ds.StudyDescription and "SYNTHETIC" in ds.SeriesDescription
        assert re.search(f"(?i){region}", ds.SeriesDescription)
        other = "thigh" if region == "leg" else "leg"
        assert not re.search(f"(?i){other}", ds.SeriesDescription)
        assert ds.BodyPartExamined == region.upper()
        assert ds.Modality == "MR" and "PD" in ds.SeriesDescription
        assert float(ds.RepetitionTime) > 2000 and float(ds.EchoTime) < 40


@pytest.mark.parametrize(
    ("contrast", "tr", "te", "options"),
    [
        ("pd", (2000, 4000), (15, 40), ""),
        ("t1", (400, 800), (8, 20), ""),
        ("t2fs", (3000, 6000), (55, 100), "FS"),
    ],
)
def test_sequence_parameters_match_the_weighting(
    tmp_path: Path, contrast: str, tr: tuple[float, float], te: tuple[float, float], options: str
) -> None:
    write_series(small("leg", contrast), tmp_path)
    ds = read_series(tmp_path)[0]
    assert tr[0] < float(ds.RepetitionTime) < tr[1]
    assert te[0] < float(ds.EchoTime) < te[1]
    assert options in (ds.ScanOptions or "")
    assert ds.ScanningSequence == "SE"


def test_several_series_in_one_study(tmp_path: Path) -> None:
    study = StudyInfo.for_subject("leg", 5)
    write_series(small("leg", "pd"), tmp_path, study=study, series_number=1)
    write_series(small("leg", "t1"), tmp_path, study=study, series_number=2)
    dss = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("*.dcm"))]
    assert len(dss) == 10
    assert {ds.StudyInstanceUID for ds in dss} == {study.StudyInstanceUID}
    assert len({ds.SeriesInstanceUID for ds in dss}) == 2
    assert {int(ds.SeriesNumber) for ds in dss} == {1, 2}
    assert len({ds.SOPInstanceUID for ds in dss}) == 10
    assert len({ds.FrameOfReferenceUID for ds in dss}) == 1


def test_enhanced_variant_is_one_multiframe_instance(tmp_path: Path) -> None:
    ph = small("thigh", "t2fs")
    (path,) = write_series(ph, tmp_path, enhanced=True)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    assert int(ds.NumberOfFrames) == ph.shape[0]
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert np.allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], ph.spacing[1:])
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, np.add(ph.origin, (0, 0, k * ph.spacing[0])), atol=1e-3)
    assert np.array_equal(ds.pixel_array, np.clip(np.rint(ph.image), 0, 4095).astype(np.uint16))


def test_labels_file_round_trips_without_pickle(tmp_path: Path) -> None:
    ph = small("thigh", "pd")
    path = write_labels(ph, tmp_path / "gt" / "labels.npz")
    with np.load(path, allow_pickle=False) as data:
        assert {"labels", "spacing", "origin", "label_values", "label_keys"} <= set(data.files)
        assert np.array_equal(data["labels"], ph.labels)
        assert tuple(data["spacing"]) == ph.spacing and tuple(data["origin"]) == ph.origin
        keys = dict(zip(data["label_values"].tolist(), data["label_keys"].tolist(), strict=True))
    assert keys == label_names("thigh")
    assert read_labels(path)["region"] == "thigh"


def test_one_sided_labels_file_lists_that_side_only(tmp_path: Path) -> None:
    ph = small("leg", "t1", limbs="left")
    data = read_labels(write_labels(ph, tmp_path / "l.npz"))
    assert data["label_values"].tolist() == [7, 8, 9, 10, 11, 12]
    assert all(k.endswith("_left") for k in data["label_keys"].tolist())


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.phantom import dicom_io

    calls = {"n": 0}
    real = dicom_io.write_atomic

    def flaky(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(dicom_io, "write_atomic", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_series(small(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cohorts_are_reproducible_and_disjoint() -> None:
    sizes = {"pretrain_pd_leg": 44, "pretrain_pd_thigh": 44, "learning_a_t1_leg": 25, "learning_b_t1_leg": 13}
    for name, size in sizes.items():
        assert len(cohort(name)) == size
        assert cohort(name) == cohort(name)
    assert {"validation_pd_leg", "validation_pd_thigh"} <= set(cohort_names())
    seen: set[int] = set()
    for name in cohort_names():
        seeds = {s.seed for s in cohort(name, n=200)}
        assert len(seeds) == 200 and not seeds & seen, name
        seen |= seeds
    learning = cohort("learning_a_t1_leg")
    assert all(s.contrast == "t1" and s.region == "leg" and s.limbs == "both" for s in learning)
    assert all(s.slice_thickness == 8.0 for s in learning)
    assert all(s.contrast == "pd" and s.slice_thickness == 5.0 for s in cohort("pretrain_pd_thigh"))
    assert any(s.fat_infiltration for s in cohort("pretrain_pd_leg"))  # some subjects are diseased
    assert cohort("learning_b_t1_leg", n=3) == cohort("learning_b_t1_leg")[:3]
    assert set(COHORTS) == set(cohort_names())
    with pytest.raises(ValueError, match="unknown cohort"):
        cohort("nope")
