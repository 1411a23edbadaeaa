"""Guarded local learning: a learned revision that is worse on the site's reference set is kept, not activated,
and says why; the reference set and the replay buffer are bounded rows that survive a new process.

Real model, real learning (the shipped leg model and SYNTHETIC phantoms), no mocks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dicom_node.core.db import session_scope
from dicom_node.core.engine import make_engine
from dicom_node.work.guard import (
    REFERENCE,
    REPLAY,
    GuardSettings,
    SiteCase,
    admit,
    decide,
    guarded_step,
    holdout,
    make_case,
    plan,
    replay_cases,
    role_for,
    soften,
    spread,
    tolerance_spent,
    with_spent,
)
from dicom_node.work.learning import ModelRegistry
from dicom_node.work.site_cases import SiteCaseStore
from models.phantom import cohort, generate
from models.phantom.spec import Phantom


def _phantom(spec_index: int, cohort_name: str = "validation_pd_leg") -> Phantom:
    spec = cohort(cohort_name, spec_index + 1)[spec_index]
    return generate(dataclasses.replace(spec, n_slices=6, matrix=256))


def _case(ph: Phantom) -> SiteCase:
    return make_case(f"approval:{ph.spec.seed}", ph.image, ph.labels, ph.spacing, range(ph.shape[0]))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    return ModelRegistry(engine, tmp_path / "models", tmp_path / "node_key.pem")


def test_spread_holdout_roles_and_replay_are_bounded() -> None:
    assert spread(range(10), 3) == [0, 4, 9] and spread([3, 1], 5) == [1, 3]
    learn, held = holdout(range(12), 4, 5)
    assert held == [2, 6, 10] and sorted(learn + held) == list(range(12))
    assert holdout(range(5), 4, 5) == ([0, 1, 2, 3, 4], [])  # too few to hold any out
    # the reference set fills first, then the two take turns
    assert [role_for(n, 0, 3) for n in range(3)] == [REFERENCE] * 3
    assert (role_for(3, 0, 3), role_for(3, 3, 3), role_for(4, 3, 3)) == (REPLAY, REFERENCE, REPLAY)
    # a series that joins the reference set keeps its reference slices out of its own learning step
    settings = GuardSettings()  # case_slices 6, min_learning_slices 5, min_reference_cases 3
    first = plan(range(10), 0, 0, settings)
    assert first.role == REFERENCE and len(first.kept) == 5 and len(first.learn) == 5  # 5 must remain to learn
    assert sorted(first.kept + first.learn) == list(range(10)) and not set(first.kept) & set(first.learn)
    big = plan(range(30), 3, 3, settings)
    assert big.role == REFERENCE and len(big.kept) == 6 and len(big.learn) == 24
    replayed = plan(range(20), 3, 0, settings)
    assert replayed.role == REPLAY and replayed.learn == list(range(20)) and len(replayed.kept) == 6
    tiny = plan(range(5), 0, 0, settings)  # nothing can be kept unlearned: replayed instead
    assert tiny.role == REPLAY and tiny.learn == list(range(5))
    img = np.zeros((4, 8, 8), np.float32)
    buffer = [SiteCase(f"k{i}", img + i, img.astype(np.uint8), (5.0, 1.0, 1.0)) for i in range(3)]
    picked = replay_cases(buffer, 5)
    assert sum(len(c[0]) for c in picked) == 5
    assert [float(c[0][0, 0, 0]) for c in picked] == [0.0, 1.0, 2.0]  # every series contributes
    assert sum(len(c[0]) for c in replay_cases(buffer, 100)) == 12 and replay_cases(buffer, 0) == []


@pytest.mark.slow
def test_a_revision_worse_on_the_reference_set_is_not_activated_and_says_why(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    rev, active = registry.active("leg")
    reference = [_case(_phantom(i)) for i in range(3)]
    # A careless "correction": every muscle of the right leg labelled as its neighbour. Learning from it is
    # real learning; it makes the model worse at what the site's reference set shows.
    bad = _phantom(3)
    n = active.n_muscles
    swap = np.arange(2 * n + 1, dtype=np.uint8)
    swap[1 : n + 1] = np.roll(np.arange(1, n + 1), 1)
    swap[n + 1 :] = np.roll(np.arange(n + 1, 2 * n + 1), 1)
    wrong = swap[bad.labels]
    settings = GuardSettings(replay_slices=0)
    step = guarded_step(active, bad.image, wrong, bad.spacing, range(bad.shape[0]), reference, [], settings)
    verdict = step.verdict
    assert not verdict.accepted
    assert verdict.candidate_dice is not None and verdict.active_dice is not None
    assert verdict.candidate_dice < verdict.active_dice - settings.tolerance
    assert verdict.reason.startswith("rejected:") and "worse than the active revision" in verdict.reason
    # the softened candidates (half and a quarter of the step) were judged too, and are still worse
    assert step.softened == 0.25 and verdict.reason.count("softened ×0.25 after the full step was rejected:") == 1
    assert "×0.5" not in verdict.reason and step.candidate.metadata["history"][-1]["softened"] == 0.25
    assert verdict.cases == 3 and verdict.holdout_slices == 0  # judged on the reference set, not on itself

    kept = registry.add(
        step.candidate, source="local", parent_revision=rev.revision, source_key="approval:1.2.3.4", verdict=verdict
    )
    state = registry.state("leg")
    assert state["active_revision"] == rev.revision  # the rejected candidate did not become active
    shown = next(r for r in state["revisions"] if r["revision"] == kept.revision)
    assert shown["verdict"] == "rejected" and shown["verdict_reason"] == verdict.reason
    assert shown["reference_dice"] == pytest.approx(verdict.candidate_dice)
    assert registry.unpin("leg")["active_revision"] == rev.revision  # unpinning does not bring it in either
    # the same approval never becomes a second revision
    again = registry.add(step.candidate, source="local", parent_revision=rev.revision, source_key="approval:1.2.3.4")
    assert again.revision == kept.revision


def test_a_softened_candidate_lies_between_the_active_weights_and_the_step(registry: ModelRegistry) -> None:
    _rev, active = registry.active("leg")
    rng = np.random.default_rng(7)
    stepped = [w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in active.weights]
    candidate = active.derive(stepped, {"kind": "learn", "slices": 8})
    half = soften(active, candidate, 0.5)
    for a, c, h in zip(active.weights, candidate.weights, half.weights, strict=True):
        np.testing.assert_allclose(h, (a + c) / 2, rtol=1e-5, atol=1e-6)
        assert h.dtype == c.dtype
    assert (half.version, half.parent_version) == (candidate.version, candidate.parent_version)
    assert half.metadata["history"][-1] == {**candidate.metadata["history"][-1], "softened": 0.5}
    assert "softened" not in candidate.metadata["history"][-1]  # the step itself is left as it was
    for alpha in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            soften(active, candidate, alpha)


def test_the_tolerance_is_a_budget_a_lineage_cannot_spend_twice(registry: ModelRegistry, tmp_path: Path) -> None:
    # four candidates, each a little worse on the reference set than the one before: on their own each is
    # within the tolerance (0.005); together they would lose 0.012
    spent = 0.0
    verdicts = []
    for loss in (0.003, 0.003, 0.002, 0.004):
        accepted, after = decide(0.85 - loss, 0.85, 0.005, spent)
        verdicts.append(accepted)
        spent = after
    assert verdicts == [True, False, True, False]  # the second and the fourth would overspend
    assert spent == pytest.approx(0.005)
    assert decide(0.851, 0.85, 0.005, spent) == (True, 0.0)  # a step that holds its ground restores the budget
    assert decide(0.85, 0.85, 0.005, 0.005) == (True, 0.0)

    # the budget travels with the revision (its own history), so a new process reads it from the registry
    rev, active = registry.active("leg")
    assert tolerance_spent(active) == 0.0
    candidate = with_spent(active.derive(active.weights, {"kind": "learn", "slices": 8}), 0.0031)
    assert tolerance_spent(candidate) == pytest.approx(0.0031)
    kept = registry.add(candidate, source="local", parent_revision=rev.revision, source_key="approval:budget")
    fresh = ModelRegistry(make_engine(str(registry.engine.url)), registry.models_dir, tmp_path / "node_key.pem")
    assert tolerance_spent(fresh.package(fresh.revision("leg", kept.revision))) == pytest.approx(0.0031)


def test_site_cases_are_bounded_rows_with_files(registry: ModelRegistry, tmp_path: Path) -> None:
    store = SiteCaseStore(registry.engine, registry.models_dir)
    img = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    for i in range(4):
        case = SiteCase(f"approval:{i}", img + i, (img > 30).astype(np.uint8), (5.0, 1.0, 1.0))
        path = store.write("leg", case)
        with session_scope(registry.engine) as s:
            store.record(s, "leg", REFERENCE, case, path, series_id=i, limit=3)
            store.record(s, "leg", REFERENCE, case, path, series_id=i, limit=3)  # a re-run adds nothing
    assert store.counts("leg") == {REFERENCE: 3, REPLAY: 0}
    kept = store.cases("leg", REFERENCE)
    assert [c.key for c in kept] == ["approval:1", "approval:2", "approval:3"]  # the oldest was dropped
    np.testing.assert_array_equal(kept[0].image, img + 1)
    assert kept[0].spacing == (5.0, 1.0, 1.0)
    assert store.prune("leg") == 1 and len(list((registry.models_dir / "leg" / "cases").glob("*.npz"))) == 3
    fresh = SiteCaseStore(make_engine(str(registry.engine.url)), registry.models_dir)  # as a new process sees it
    assert [c.key for c in fresh.cases("leg", REFERENCE)] == [c.key for c in kept]


@pytest.mark.slow
def test_a_reference_series_is_never_learned_by_any_revision(registry: ModelRegistry) -> None:
    _rev, active = registry.active("leg")
    ph = generate(dataclasses.replace(cohort("validation_pd_leg", 1)[0], n_slices=10, matrix=256))
    # the default fallback defers: the first approvals fill the reference set and nothing is learned
    deferred = guarded_step(active, ph.image, ph.labels, ph.spacing, range(10), [], [], GuardSettings())
    assert deferred.deferred and deferred.candidate is active and deferred.learned == []
    assert not deferred.verdict.accepted and "learning.fallback: defer" in deferred.verdict.reason
    assert deferred.plan is not None and len(deferred.plan.kept) == 6  # case_slices, none of them learned
    # the holdout fallback learns at once, but still never the slices the series keeps for the reference set
    settings = GuardSettings(fallback="holdout")
    step = guarded_step(active, ph.image, ph.labels, ph.spacing, range(10), [], [], settings)
    assert not step.deferred
    assert step.plan is not None and step.plan.role == REFERENCE  # the first approvals fill the reference set
    kept = set(step.plan.kept)
    assert kept and not kept & set(step.learned)  # its reference slices were left out of the step
    assert step.candidate.metadata["history"][-1]["slices"] == len(step.learned)
    # the fallback judged the candidate on them (plus the slices it held out of what it learned)
    assert kept <= set(step.held_out) and step.verdict.holdout_slices == len(step.held_out)
    role, case = admit("approval:ref", ph.image, ph.labels, ph.spacing, step)
    assert role == REFERENCE and case.n_slices == len(kept)
    np.testing.assert_array_equal(case.image, ph.image[sorted(kept)])
