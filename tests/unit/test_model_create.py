"""Model creation from a site's data, without training: label tables, reading DICOM + SEG and NIfTI (and
refusing what does not fit), the deterministic split and the report's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from models.create.build import label_lut, split_subjects
from models.create.dataset import DatasetError, load_dataset
from models.create.labels import LabelTableError, catalogue_table, read_table
from models.create.report import evaluate_cases, format_report, hd95, score_case
from tests.helpers_create import write_labelled_phantom
from tests.peers import dciodvfy

# --- label tables -----------------------------------------------------------------------------------------


def test_csv_table_with_codes_colours_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "value,name,snomed_code,colour\n2,Supraspinatus,,#00ff00\n1,Deltoid,32462008,255 0 0\n3,Infraspinatus,,\n"
    )
    table = read_table(path)
    assert [lab.key for lab in table.labels] == ["deltoid", "supraspinatus", "infraspinatus"]
    assert table.labels[0].snomed_code == "32462008" and table.labels[0].colour == (255, 0, 0)
    assert table.labels[1].colour == (0, 255, 0) and table.labels[2].snomed_code is None
    assert table.region is None and not table.splittable()


def test_json_table_of_the_catalogue_is_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"labels": catalogue_table("thigh").to_json()}))
    table = read_table(path)
    assert table.region == "thigh" and table.splittable()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("value,name\n1,A\n3,B\n", "without gaps"),
        ("value,name,colour\n1,A,#12\n", "colour"),
        ("value,name,snomed_code\n1,A,abc\n", "digits"),
        ("value,name,key\n1,A,x\n2,B,x\n", "unique"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelTableError, match=message):
        read_table(path)


# --- DICOM + SEG ------------------------------------------------------------------------------------------


def test_dicom_seg_cases_read_back_exactly(tmp_path: Path) -> None:
    _files, seg, ph = write_labelled_phantom(tmp_path / "data" / "s1", 5100, n_slices=4, matrix=96)
    assert dciodvfy(seg) == []
    (tmp_path / "data" / "notes.txt").write_text("not DICOM")
    data = load_dataset(tmp_path / "data")
    assert data.kind == "dicom-seg" and data.table.region == "leg" and len(data.cases) == 1
    image, labels, spacing = data.cases[0].load()
    assert np.array_equal(labels, ph.labels) and image.shape == ph.image.shape
    assert spacing == pytest.approx(ph.spacing)
    assert any("not DICOM" in note for note in data.skipped)


def test_seg_off_its_series_geometry_is_refused(tmp_path: Path) -> None:
    _files, seg_path, _ph = write_labelled_phantom(tmp_path / "data" / "s1", 5200, n_slices=4, matrix=96)
    ds = pydicom.dcmread(seg_path)
    pos = ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    pos.ImagePositionPatient = [float(pos.ImagePositionPatient[0]) + 3.0, *pos.ImagePositionPatient[1:]]
    ds.save_as(seg_path)
    data = load_dataset(tmp_path / "data")
    with pytest.raises(DatasetError, match=r"does not match the geometry of series .*position"):
        data.cases[0].load()


def test_seg_without_its_series_is_refused(tmp_path: Path) -> None:
    files, _seg, _ph = write_labelled_phantom(tmp_path / "data" / "s1", 5300, n_slices=3, matrix=96)
    for f in files:
        f.unlink()
    with pytest.raises(DatasetError, match=r"references series .* not under"):
        load_dataset(tmp_path / "data")


# --- NIfTI ------------------------------------------------------------------------------------------------


def _write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def test_nifti_pairs_with_any_label_set(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, size=(5, 32, 40)).astype(np.uint8)
    _write_nifti(
        tmp_path / "images" / "case1_0000.nii.gz", rng.normal(size=mask.shape).astype(np.float32), (0.8, 0.9, 4.0)
    )
    _write_nifti(tmp_path / "labels" / "case1.nii.gz", mask, (0.8, 0.9, 4.0))
    table = tmp_path / "t.json"
    table.write_text(json.dumps([{"value": v, "name": n} for v, n in ((1, "Bone"), (2, "Muscle"), (3, "Fat"))]))
    with pytest.raises(DatasetError, match="label table"):
        load_dataset(tmp_path)
    data = load_dataset(tmp_path, table)
    _image, labels, spacing = data.cases[0].load()
    assert np.array_equal(labels, mask) and spacing == pytest.approx((4.0, 0.9, 0.8))
    assert [lab.key for lab in data.table.labels] == ["bone", "muscle", "fat"]

    _write_nifti(tmp_path / "labels" / "case1.nii.gz", mask, (0.8, 0.9, 5.0))
    with pytest.raises(DatasetError, match="not on the grid"):
        load_dataset(tmp_path, table).cases[0].load()
    _write_nifti(tmp_path / "labels" / "case1.nii.gz", (mask * 2).astype(np.uint8), (0.8, 0.9, 4.0))
    with pytest.raises(DatasetError, match="values \\[4, 6\\]"):
        load_dataset(tmp_path, table).cases[0].load()


# --- split and report -------------------------------------------------------------------------------------


def test_split_is_deterministic_by_subject() -> None:
    subjects = [f"P{i}" for i in range(10)]
    train, held = split_subjects(subjects + subjects[:3], 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8 and not set(train) & set(held)
    assert split_subjects(list(reversed(subjects)), 0.2, seed=1) == (train, held)
    assert split_subjects(subjects, 0.2, seed=2) != (train, held)
    assert split_subjects(subjects, 3, seed=1)[1].__len__() == 3
    assert split_subjects(["only"], 0.2) == (["only"], [])


def test_metrics_of_a_shifted_cube() -> None:
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[5:15, 5:15, 5:15] = 1
    pred = np.roll(ref, 3, axis=2)  # 3 voxels along x
    spacing = (4.0, 1.0, 2.0)
    scores = score_case(pred, ref, spacing, [1])[1]
    assert scores["dice"] == pytest.approx(7 / 10)
    assert scores["hd95_mm"] == pytest.approx(6.0)  # every face point of x is 3 voxels * 2 mm away at most
    assert scores["volume_diff_ml"] == pytest.approx(0.0)
    assert hd95(ref.astype(bool), ref.astype(bool), spacing) == 0.0
    assert hd95(ref.astype(bool), np.zeros_like(ref, bool), spacing) is None
    grown = ref.copy()
    grown[15:17, 5:15, 5:15] = 1
    assert score_case(grown, ref, spacing, [1])[1]["volume_diff_pct"] == pytest.approx(20.0)


def test_report_counts_missed_and_false_positive_labels() -> None:
    ref = np.zeros((4, 16, 16), np.uint8)
    ref[:, 2:8, 2:8] = 1
    ref[:, 10:14, 10:14] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # label 2 missed
    labels = [{"value": 1, "key": "a"}, {"value": 2, "key": "b"}, {"value": 3, "key": "c"}]
    fp = pred.copy()
    fp[0, 0, 0] = 3
    report = evaluate_cases(lambda image, sp: fp, [("x", (ref.astype(np.float32), ref, (1.0, 1.0, 1.0)))], labels)
    rows = {row["key"]: row for row in report["labels"]}
    assert rows["a"]["dice"]["mean"] == 1.0 and rows["b"]["dice"]["mean"] == 0.0 and rows["b"]["missed"] == 1
    assert rows["c"]["cases"] == 0 and rows["c"]["false_positive_cases"] == 1
    assert "b " in format_report(report)


def test_label_lut_maps_data_labels_to_a_package_by_key(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("value,name,key,side\n1,Soleus right,soleus_right,right\n2,Other,other,\n")
    from models.create.dataset import Dataset

    data = Dataset(read_table(path), [], "nifti")
    lut = label_lut(catalogue_table("leg").to_json(), data)
    assert lut[1] == 1 and lut[2] == 0


# --- any anatomy: a custom label table through the SEG writer and reader, and a tiny model -------------------

CUSTOM = [
    {"value": 1, "name": "Cortical bone", "snomed_code": None, "colour": "#f0f0f0"},
    {"value": 2, "name": "Deltoid", "snomed_code": "32462008", "snomed_meaning": "Deltoid muscle", "colour": "#ff0000"},
    {"value": 3, "name": "Subcutaneous fat", "snomed_code": None, "colour": "#ffff00"},
]


def _custom_table(tmp_path: Path) -> Path:
    path = tmp_path / "shoulder.json"
    path.write_text(json.dumps({"labels": CUSTOM}))
    return path


def _custom_phantom(seed: int, n_slices: int = 6, size: int = 96) -> np.ndarray:
    """Labels of a SYNTHETIC 'shoulder': bone core, a muscle ring, a fat ring (off-centre by seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-6, 6), size / 2 + rng.uniform(-6, 6)
    r = np.hypot(yy - cy, xx - cx) * rng.uniform(0.9, 1.1)
    lab = np.zeros((size, size), np.uint8)
    lab[r < 36], lab[r < 28], lab[r < 10] = 3, 2, 1
    return np.repeat(lab[None], n_slices, axis=0)


def test_custom_labels_round_trip_through_the_node_seg_writer(tmp_path: Path) -> None:
    from dicom_node.dicom.seg import build_seg, seg_to_bytes
    from dicom_node.dicom.volume import load_series
    from models.create.labels import read_table
    from models.phantom import PhantomSpec, generate, write_series

    table = read_table(_custom_table(tmp_path))
    ph = generate(PhantomSpec(region="leg", contrast="t1", seed=5400, n_slices=4, matrix=96))
    files = write_series(ph, tmp_path / "data" / "series")
    volume = load_series(files)
    labels = _custom_phantom(1, n_slices=volume.shape[0], size=volume.shape[1])
    seg = build_seg(
        volume,
        labels,
        "shoulder",
        draft=True,
        algorithm_name="shoulder",
        algorithm_version="1",
        series_number=901,
        label_table=table.to_json(),
    )
    seg_path = tmp_path / "data" / "seg.dcm"
    seg_path.write_bytes(seg_to_bytes(seg))
    assert dciodvfy(seg_path) == []
    assert "BodyPartExamined" not in seg
    data = load_dataset(tmp_path / "data")  # the table is derived from the segments
    assert [(lab.key, lab.snomed_code) for lab in data.table.labels] == [
        (lab.key, lab.snomed_code) for lab in table.labels
    ]
    assert np.array_equal(data.cases[0].load()[1], labels)


def test_create_a_model_for_any_anatomy_from_nifti(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from models.create.build import CreateSettings, create_model

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    intensity = np.array([0.0, 900.0, 300.0, 700.0], np.float32)
    for i in range(5):
        lab = _custom_phantom(i)
        img = intensity[lab] + np.random.default_rng(i).normal(0, 20, lab.shape).astype(np.float32)
        for folder, arr in (("images", np.abs(img)), ("labels", lab)):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing((1.5, 1.5, 5.0))
            sitk.WriteImage(im, str(tmp_path / folder / f"case{i}.nii.gz"))
    data = load_dataset(tmp_path, _custom_table(tmp_path))
    settings = CreateSettings(
        name="shoulder-site",
        region="shoulder",
        spacing=3.0,
        patch=48,
        epochs=12,
        base_filters=4,
        levels=3,
        augment=False,
        batch_size=8,
        learning_rate=5e-3,
        holdout=1,
    )
    stages: set[str] = set()
    pkg, report = create_model(settings, data, progress=lambda stage, f: stages.add(stage))
    assert stages == {"reading", "training", "evaluating"}
    assert pkg.region == "shoulder" and pkg.input_spec.limbs == "none" and pkg.n_muscles == 3
    assert [lab["key"] for lab in pkg.labels] == ["cortical_bone", "deltoid", "subcutaneous_fat"]
    assert report["cases"] == 1 and pkg.metadata["evaluation"]["labels"] == report["labels"]
    for row in report["labels"]:
        assert row["dice"]["mean"] > 0.6, row  # untrained: ~0


# --- the command line: phantom ground truth as SEG, installing a package on a node --------------------------


def test_phantom_command_writes_its_ground_truth_as_seg(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from models.phantom.cli import phantom

    cli = typer.Typer()
    cli.command()(phantom)
    args = ["--region", "leg", "--contrast", "t1", "--seed", "5500", "--slices", "3", "--matrix", "96", "--seg"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert dciodvfy(tmp_path / "s" / "seg.dcm") == []
    _image, labels, _sp = load_dataset(tmp_path / "s").cases[0].load()
    assert np.array_equal(labels, np.load(tmp_path / "s" / "labels.npz")["labels"])


def test_install_command_verifies_and_registers_a_package(tmp_path: Path) -> None:
    import typer
    import yaml
    from typer.testing import CliRunner

    from dicom_node.cli.review_commands import register
    from models.create.build import signing_key, write_signed
    from tests.helpers_models import tiny_package
    from tests.peers import node_settings

    model_app = typer.Typer()
    register(typer.Typer(), model_app)  # `laurel model install` is a node command, attached to the model group
    write_signed(tiny_package(), tmp_path / "tiny.laurel", signing_key(tmp_path / "k.pem"))
    signing_key(tmp_path / "other.pem")
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(node_settings(tmp_path / "node")))
    base = ["install", str(tmp_path / "tiny.laurel"), "--config", str(config), "--public-key"]

    refused = CliRunner().invoke(model_app, [*base, str(tmp_path / "other.pem.pub")])
    assert refused.exit_code == 2 and "not trusted" in refused.output
    for _ in range(2):  # installing the same bytes again adds nothing
        ok = CliRunner().invoke(model_app, [*base, str(tmp_path / "k.pem.pub")])
        assert ok.exit_code == 0, ok.output
        assert "tiny-leg: revision 1 installed; active revision 1" in ok.output
