"""The model package: round trip through bytes into a fresh process, identity, versions, code as source."""

from __future__ import annotations

import os
import pickletools
import subprocess
import sys
import uuid
from pathlib import Path

import dill
import numpy as np
import pytest

from models import package, signing
from models.code import CODE_MODULES, PackageCode
from models.package import ModelPackage, PackageError
from tests.helpers_models import SPACING, synthetic_limbs, tiny_package

REPO = Path(__file__).resolve().parents[2]

FRESH_PROCESS = r"""
import sys, types
import numpy as np
# Sabotage this Laurel's own model code: the package must run the code it carries.
for name in ("models.network", "models.losses", "models.training", "models.aggregation"):
    poison = types.ModuleType(name)
    def _refuse(*a, _n=name, **k):
        raise AssertionError(f"Laurel's {_n} was used instead of the package's code")
    poison.__getattr__ = lambda attr, _r=_refuse: _r
    sys.modules[name] = poison
from models import package, signing
data = open(sys.argv[1], "rb").read()
pub = signing.public_key_from_b64(open(sys.argv[2]).read())
pkg = package.load(data, [pub])
vol = np.load(sys.argv[3], allow_pickle=False)
np.save(sys.argv[4], pkg.apply(vol, (5.0, 1.0, 1.0)), allow_pickle=False)
merged = pkg.merge_linear(pkg.weights, 0.5)
print("OK", pkg.name, pkg.version, merged.version)
"""


def test_round_trip_in_a_fresh_process_applies_identically(tmp_path: Path) -> None:
    vol, _ = synthetic_limbs(seed=1)
    pkg = tiny_package()
    expected = pkg.apply(vol, SPACING)
    priv, pub = signing.generate_keypair()
    (tmp_path / "m.laurel").write_bytes(package.sign(package.dumps(pkg), priv))
    (tmp_path / "key").write_text(signing.public_key_to_b64(pub))
    np.save(tmp_path / "vol.npy", vol, allow_pickle=False)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    args = [str(tmp_path / n) for n in ("m.laurel", "key", "vol.npy", "out.npy")]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK tiny-leg 0 1" in proc.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy", allow_pickle=False), expected)


def test_payload_is_plain_data_with_the_code_as_source() -> None:
    pkg = tiny_package()
    payload = signing.parse(package.dumps(pkg)).payload
    globals_ = [arg for op, arg, _ in pickletools.genops(payload) if op.name in ("GLOBAL", "STACK_GLOBAL")]
    assert globals_ == [], f"payload references importable objects: {globals_}"
    state = dill.loads(payload)  # noqa: S301 - our own bytes, checked above to hold no globals
    assert set(state["code"]) == set(CODE_MODULES)
    assert "def build_network" in state["code"]["models.network"]
    assert "def learn_volume" in state["code"]["models.training"]
    again = ModelPackage.from_state(state)
    for a, b in zip(again.weights, pkg.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_package_runs_the_code_it_carries() -> None:
    pkg = tiny_package()
    code = dict(pkg.code)
    code["models.aggregation"] = code["models.aggregation"].replace(
        '"""Dafne\'s merge: ``(1 - weight) · current + weight · update``."""',
        '"""Patched merge."""\n    return [w * 0 + 7 for w in current]',
    )
    assert code["models.aggregation"] != pkg.code["models.aggregation"]
    patched = pkg.with_weights(pkg.weights, code=code)
    merged = patched.merge_linear(pkg.weights)
    assert all(np.all(w == 7) for w in merged.weights)
    assert not all(np.all(w == 7) for w in pkg.merge_linear(pkg.weights).weights)


def test_package_code_may_only_import_its_own_modules() -> None:
    code = {"models.a": "from models import b\nVALUE = b.X + 1\n", "models.b": "X = 41\n"}
    executed = PackageCode(code)
    assert executed.modules["models.a"].VALUE == 42
    with pytest.raises(ImportError, match="only import its own modules"):
        PackageCode({"models.a": "import models.labels\n"})


def test_identity_manifest_and_labels() -> None:
    pkg = tiny_package()
    uuid.UUID(pkg.family_id)
    assert (pkg.version, pkg.parent_version, pkg.region, pkg.n_muscles) == (0, None, "leg", 6)
    assert [lab["value"] for lab in pkg.labels] == list(range(1, 13))
    assert pkg.labels[0]["key"] == "soleus_right" and pkg.labels[6]["key"] == "soleus_left"
    assert {"snomed_code", "colour", "name", "side"} <= set(pkg.labels[0])
    man = package.read_manifest(package.dumps(pkg))
    assert man["family_id"] == pkg.family_id and man["version"] == 0 and man["signed_by"] is None
    assert man["frameworks"]["tensorflow"] and man["frameworks"]["python"]
    assert man["n_parameters"] == sum(w.size for w in pkg.weights)
    assert len(pkg.weight_names) == len(pkg.weights)


def test_constructors_refuse_bad_input() -> None:
    pkg = tiny_package()
    with pytest.raises(PackageError, match="version"):
        pkg.with_weights(pkg.weights, version=-1)
    with pytest.raises(PackageError, match="parent_version"):
        pkg.with_weights(pkg.weights, version=2, parent_version=2)
    with pytest.raises(PackageError, match="shape"):
        pkg.with_weights([np.zeros((1,), np.float32)] * len(pkg.weights))
    with pytest.raises(PackageError, match="weight arrays"):
        pkg.with_weights(pkg.weights[:-1])
    with pytest.raises(PackageError, match="UUID"):
        pkg.with_weights(pkg.weights, family_id="nope")
    with pytest.raises(ValueError, match="region"):  # a catalogue region takes the catalogue's labels only
        pkg.with_weights(pkg.weights, region="thigh")
    with pytest.raises(ValueError, match="region"):
        pkg.with_weights(pkg.weights, region=" ")
    with pytest.raises(TypeError, match="unknown package fields"):
        pkg.with_weights(pkg.weights, colour="red")


def test_apply_keeps_the_geometry_and_uses_sided_labels() -> None:
    from models.preprocessing import find_limbs

    pkg = tiny_package()
    for limbs in ("both", "right", "left"):
        vol, _ = synthetic_limbs(n_slices=3, limbs=limbs)
        out = pkg.apply(vol, SPACING)
        assert out.shape == vol.shape and out.dtype == np.uint8
        assert out.max() <= 12
        for side, x0, x1 in find_limbs(vol):
            part = out[:, :, x0:x1]
            wrong_side = (part > 6) if side == "right" else ((part > 0) & (part <= 6))
            assert not wrong_side.any()
        assert [s for s, _, _ in find_limbs(vol)] == (["right", "left"] if limbs == "both" else [limbs])
    with pytest.raises(ValueError, match="spacing"):
        pkg.apply(vol, (1.0, 1.0))


def test_learn_makes_a_child_version_using_every_slice() -> None:
    vol, lab = synthetic_limbs(n_slices=7, seed=3)
    pkg = tiny_package()
    calls: list[float] = []
    child = pkg.learn(vol, lab, SPACING, progress=calls.append)
    assert (child.version, child.parent_version, child.family_id) == (1, 0, pkg.family_id)
    record = child.metadata["history"][-1]
    assert record["kind"] == "incremental" and record["slices"] == 7
    assert record["samples"] == 14  # both limbs of every slice
    assert record["epochs"] == 5 and record["batch_size"] == 5
    assert len(calls) == 5 * 3  # ceil(14 / 5) batches per epoch: the remainder is not dropped
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0)
    assert any(not np.array_equal(a, b) for a, b in zip(child.weights, pkg.weights, strict=True))
    assert child.delta(pkg)[0].shape == pkg.weights[0].shape
    with pytest.raises(ValueError, match="at least 5"):
        pkg.learn(vol, lab, SPACING, slices=[0, 1, 2, 3])


def test_learn_with_replay_mixes_earlier_slices_and_old_code_refuses_it() -> None:
    vol, lab = synthetic_limbs(n_slices=6, seed=3)
    old_vol, old_lab = synthetic_limbs(n_slices=3, seed=4)
    pkg = tiny_package()
    assert pkg.supports_replay()
    calls: list[float] = []
    child = pkg.learn(
        vol, lab, SPACING, replay=[(old_vol, old_lab, SPACING)], overrides={"epochs": 2}, progress=calls.append
    )
    record = child.metadata["history"][-1]
    assert record["slices"] == 6 and record["replay_samples"] == 6  # both limbs of 3 replayed slices
    assert record["samples"] == 18 and record["epochs"] == 2
    assert len(calls) == 2 * 4  # ceil(18 / 5) batches per epoch: the replayed slices are trained on
    # a package whose learning code predates replay says so instead of silently ignoring it
    training = pkg.code["models.training"]
    old_signature = training.replace("    replay: Sequence[Case] | None = None,\n", "").replace(
        "    overrides: Mapping[str, Any] | None = None,\n", ""
    )
    assert old_signature != training
    old = pkg.with_weights(pkg.weights, code={**pkg.code, "models.training": old_signature})
    assert not old.supports_replay()
    with pytest.raises(PackageError, match="without replay"):
        old.learn(vol, lab, SPACING, replay=[(old_vol, old_lab, SPACING)])


def test_package_merges_make_new_versions() -> None:
    pkg = tiny_package()
    other = pkg.with_weights([w + 1 for w in pkg.weights])
    merged = pkg.merge_linear(other, 0.5)
    assert merged.version == 1 and merged.metadata["history"][-1]["rule"] == "linear"
    np.testing.assert_allclose(merged.weights[0], pkg.weights[0] + 0.5, rtol=1e-6, atol=1e-6)
    stale = pkg.merge_delta(pkg, other, staleness=2, discount=0.5, weight=1.0)
    np.testing.assert_allclose(stale.weights[0], pkg.weights[0] + 0.25, rtol=1e-6, atol=1e-6)
    part = pkg.merge_partial(other)
    for name, new, old in zip(part.weight_names, part.weights, pkg.weights, strict=True):
        np.testing.assert_allclose(new, old + 0.5 if name.startswith("enc") else old, rtol=1e-6, atol=1e-6)
