"""Guarded local learning: the site's reference set, the replay buffer and the verdict on a candidate.

A learning step makes a *candidate* revision; it becomes active only when it is not worse than the active
revision, beyond ``learning.tolerance``, on the site's **reference set**: a rolling, bounded set of recent
approved series kept on site (a few labelled slices of each), never the series just learned. Approved
series first fill the reference set up to ``learning.min_reference_cases``, then take turns: one joins the
reference set, the next the **replay buffer**, whose slices are mixed into later learning steps so that a
step keeps what the model knew. The two never share a series, so a candidate is never judged on slices it
replayed.

No revision ever learns a reference slice: when an approved series is to join the reference set (the
role is decided before its step, :func:`plan`), the slices kept for the reference set are left out of its
learning step (at most ``learning.case_slices``, and never so many that fewer than
``min_learning_slices`` remain to learn). Were they learned, the active revision would have seen the
newest reference series and every candidate, having learned the next one, would look worse on it than
the active one only because it forgot a little of what the active one had just memorised; in the
learning experiment that bias rejected nearly every full step.

Softened candidates: a step learned from one series often moves the weights too far toward it (on the
reference set it is then worse than the active revision). When a candidate is rejected, the guard tries
the weights part of the way from the active revision to the candidate, ``active + α·(candidate − active)``
for each ``α`` of ``learning.soften`` in turn (weight interpolation, as in WiSE-FT), judged the same way
on the same reference set; the first that is not worse becomes the candidate. Its history names the ``α``.

The tolerance is a budget, not a per-step allowance: every accepted candidate that is worse than its
active revision spends part of it, recorded in the candidate's own history (``tolerance_spent``), and
the next candidate may only lose what is left. A candidate that is not worse than its active revision
restores the whole budget. So a lineage cannot drift down one tolerated step at a time (on a noisy
reference set each step would pass on its own); at most ``learning.tolerance`` below the last revision
that held its ground.

Cautious fallback, while the reference set holds fewer than ``learning.min_reference_cases`` series
(``learning.fallback``): ``defer`` (the default) learns nothing yet: the approved series joins the reference
set and the model stays as it is until there is a yardstick to judge a step by. ``holdout`` learns at once:
every ``learning.holdout_every``-th labelled slice of the approved series is held out of the step and joins
the validation set (with the reference series there are, and the series' own unlearned reference slices);
slices of the very series a step learned from say little about other patients, and in the learning
experiment such a first step lost 0.03 of the held-out group's median Dice while it looked better. A
candidate that cannot be validated at all (no reference series, too few slices to hold any out) is not
activated.

Everything here is a plain function of arrays and packages, shared by the node's ``learn`` job and the
learning experiment (benchmarks/learning_curve.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.package import ModelPackage

logger = logging.getLogger(__name__)

REFERENCE = "reference"
REPLAY = "replay"
ROLES = (REFERENCE, REPLAY)
DEFER = "defer"  # fallback: learn nothing until the reference set is full
HOLDOUT = "holdout"  # fallback: learn at once, judged on held-out slices of the same series


@dataclass(frozen=True)
class GuardSettings:
    """The knobs of guarded learning (``learning`` section of the node config)."""

    tolerance: float = 0.005  # Dice a lineage may lose, in all, since its last revision that held its ground
    min_reference_cases: int = 3  # below this, the cautious fallback (held-out slices) applies
    reference_cases: int = 5  # series kept in the reference set (the newest)
    replay_cases: int = 8  # series kept in the replay buffer (the newest)
    case_slices: int = 6  # labelled slices kept per series
    replay_slices: int = 20  # replayed slices mixed into one learning step
    holdout_every: int = 4  # fallback: every n-th labelled slice is held out of the step
    min_learning_slices: int = 5  # a step needs at least this many labelled slices
    soften: tuple[float, ...] = (0.5, 0.25)  # a rejected candidate is retried part of the way from the active one
    fallback: str = DEFER  # until the reference set holds min_reference_cases series: DEFER or HOLDOUT


@dataclass(frozen=True)
class SiteCase:
    """Labelled slices of one approved series kept on site: ``image``/``labels`` ``(k, y, x)``."""

    key: str  # the approval's source key, ``approval:<SEG SOP Instance UID>``
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def n_slices(self) -> int:
        """How many slices the case keeps."""
        return int(self.image.shape[0])


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may become active, and why (a sentence a person can read)."""

    accepted: bool
    reason: str
    candidate_dice: float | None
    active_dice: float | None
    cases: int  # reference series in the validation set
    holdout_slices: int  # held-out slices of the approved series in the validation set
    spent: float = 0.0  # the tolerance spent along the lineage once this candidate is active


def tolerance_spent(pkg: ModelPackage) -> float:
    """The tolerance the lineage of ``pkg`` has spent since its last revision that held its ground."""
    history = pkg.metadata.get("history") or [{}]
    return float(history[-1].get("tolerance_spent", 0.0))


def decide(candidate_dice: float, active_dice: float, tolerance: float, spent: float) -> tuple[bool, float]:
    """``(accepted, spent after)``: a candidate may lose what is left of the tolerance; one that loses
    nothing restores it all."""
    loss = active_dice - candidate_dice
    if loss <= 0:
        return True, 0.0
    if loss > tolerance - spent + 1e-12:
        return False, spent
    return True, spent + loss


def with_spent(pkg: ModelPackage, spent: float) -> ModelPackage:
    """``pkg`` with the tolerance its lineage has spent written into its last history record."""
    history = list(pkg.metadata.get("history", []))
    if not history:
        return pkg
    history[-1] = {**history[-1], "tolerance_spent": round(float(spent), 6)}
    return pkg.with_weights(pkg.weights, metadata={**pkg.metadata, "history": history})


def spread(indices: Sequence[int], n: int) -> list[int]:
    """At most ``n`` of ``indices``, evenly spread over them (first and last kept)."""
    idx = sorted(int(i) for i in indices)
    if len(idx) <= n:
        return idx
    picks = np.unique(np.round(np.linspace(0, len(idx) - 1, n)).astype(int))
    return [idx[int(p)] for p in picks]


def make_case(
    key: str, image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], slices: Sequence[int]
) -> SiteCase:
    """A site case from the given slices of an approved series."""
    zs = sorted(int(z) for z in slices)
    sp = tuple(float(v) for v in spacing)
    return SiteCase(key, np.ascontiguousarray(image[zs]), np.ascontiguousarray(labels[zs]), (sp[0], sp[1], sp[2]))


def role_for(n_reference: int, n_replay: int, min_reference: int) -> str:
    """Which set the next approved series joins: the reference set until it holds ``min_reference``
    series (so the fallback ends soon), then the two take turns."""
    return REFERENCE if n_reference < min_reference or n_reference <= n_replay else REPLAY


@dataclass(frozen=True)
class Plan:
    """What a step does with an approved series' labelled slices: which set it joins (``role``), which
    slices it learns and which it keeps for that set (a reference series' kept slices are not learned)."""

    role: str
    learn: list[int]
    kept: list[int]


def plan(
    labelled: Sequence[int], n_reference: int, n_replay: int, settings: GuardSettings, *, learning: bool = True
) -> Plan:
    """The role of a newly approved series and its slices (decided before its learning step); with
    ``learning=False`` (a deferred step) it joins the reference set and learns nothing."""
    zs = sorted({int(z) for z in labelled})
    if not learning:
        return Plan(REFERENCE, [], spread(zs, settings.case_slices))
    role = role_for(n_reference, n_replay, settings.min_reference_cases)
    if role == REFERENCE:
        n_kept = min(settings.case_slices, len(zs) - settings.min_learning_slices)
        if n_kept >= 1:
            kept = spread(zs, n_kept)
            return Plan(REFERENCE, [z for z in zs if z not in set(kept)], kept)
        role = REPLAY  # too few slices to keep any unlearned: this series is replayed, the next may be reference
    return Plan(role, zs, spread(zs, settings.case_slices))


def holdout(labelled: Sequence[int], every: int, min_learning: int) -> tuple[list[int], list[int]]:
    """``(learn, held_out)``: every ``every``-th labelled slice held out, if at least ``min_learning`` remain."""
    zs = sorted(int(z) for z in labelled)
    held = zs[every // 2 :: every] if every > 1 else []
    learn = [z for z in zs if z not in set(held)]
    if not held or len(learn) < min_learning:
        return zs, []
    return learn, held


Stack = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]


def replay_cases(buffer: Sequence[SiteCase], n_slices: int) -> list[Stack]:
    """Up to ``n_slices`` replay slices shared round-robin over the buffer's series (newest first), each
    series' share evenly spread over its slices."""
    counts = [0] * len(buffer)
    remaining = max(int(n_slices), 0)
    while remaining > 0 and any(c < case.n_slices for c, case in zip(counts, buffer, strict=True)):
        for i in reversed(range(len(buffer))):  # the buffer is oldest first
            if remaining > 0 and counts[i] < buffer[i].n_slices:
                counts[i] += 1
                remaining -= 1
    out = []
    for case, count in zip(buffer, counts, strict=True):
        if count:
            sel = spread(range(case.n_slices), count)
            out.append((case.image[sel], case.labels[sel], case.spacing))
    return out


def pooled_dice(pkg: ModelPackage, cases: Sequence[SiteCase]) -> float:
    """The paper's Dice (per slice and label, weighted by the reference's voxels) over all ``cases`` pooled."""
    from models.metrics import dice

    weighted = 0.0
    weight = 0
    for case in cases:
        voxels = int(np.count_nonzero(case.labels))
        if voxels == 0:
            continue
        overall = dice(pkg.apply(case.image, case.spacing), case.labels)["overall"]
        weighted += float(overall) * voxels
        weight += voxels
    return weighted / weight if weight else float("nan")


def judge(
    candidate: ModelPackage,
    active: ModelPackage,
    reference: Sequence[SiteCase],
    holdout_case: SiteCase | None,
    *,
    tolerance: float,
    min_cases: int,
    spent: float = 0.0,
) -> Verdict:
    """Validate ``candidate`` against ``active`` on the reference set (and held-out slices in fallback);
    ``spent`` is the part of the tolerance the active revision's lineage has already spent."""
    cases = list(reference)
    n_hold = holdout_case.n_slices if holdout_case is not None else 0
    if holdout_case is not None:
        cases.append(holdout_case)
    if not cases:
        return Verdict(
            False, "not validated: no reference series yet and too few slices to hold any out", None, None, 0, 0
        )
    cand = pooled_dice(candidate, cases)
    act = pooled_dice(active, cases)
    where = f"{len(reference)} reference series" + (f" + {n_hold} held-out slices" if n_hold else "")
    if len(reference) < min_cases:
        where += f" (fallback: fewer than {min_cases} reference series)"
    budget = f"tolerance {tolerance}" + (f", {spent:.4f} of it spent since the last step that held" if spent else "")
    accepted, after = decide(cand, act, tolerance, spent)
    if not accepted:
        reason = f"rejected: Dice {cand:.4f} on {where} is worse than the active revision's {act:.4f} ({budget})"
        return Verdict(False, reason, cand, act, len(reference), n_hold, spent)
    reason = f"accepted: Dice {cand:.4f} on {where}, active revision {act:.4f} ({budget})"
    return Verdict(True, reason, cand, act, len(reference), n_hold, after)


@dataclass(frozen=True)
class StepResult:
    """A guarded learning step: the candidate, its verdict and which slices it learned or held out."""

    candidate: ModelPackage
    verdict: Verdict
    learned: list[int]
    held_out: list[int]
    replayed: int  # replayed slices mixed into the step
    softened: float | None = None  # the α of the softened candidate that was judged last, if any
    plan: Plan | None = None  # the series' role and the slices kept for it
    deferred: bool = False  # nothing was learned (the ``defer`` fallback): no new revision to record


def soften(active: ModelPackage, candidate: ModelPackage, alpha: float) -> ModelPackage:
    """The candidate's weights moved back toward the active revision: ``active + alpha·(candidate − active)``
    (same version, parent and history as the candidate, plus ``softened`` in its last history record)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"a softening factor must lie strictly between 0 and 1, got {alpha}")
    weights = [
        (a + alpha * (c - a)).astype(c.dtype) if np.issubdtype(c.dtype, np.floating) else c
        for a, c in zip(active.weights, candidate.weights, strict=True)
    ]
    history = list(candidate.metadata.get("history", []))
    if history:
        history[-1] = {**history[-1], "softened": alpha}
    return candidate.with_weights(weights, metadata={**candidate.metadata, "history": history})


def guarded_step(
    active: ModelPackage,
    image: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    labelled: Sequence[int],
    reference: Sequence[SiteCase],
    replay: Sequence[SiteCase],
    settings: GuardSettings,
    *,
    overrides: dict[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
    validate: bool = True,
) -> StepResult:
    """Learn a candidate from an approved series (with replay) and judge it against ``active``.

    The series' slices kept for the reference set (:func:`plan`) are never learned. With
    ``validate=False`` (the guard switched off) every labelled slice is learned and the candidate is
    accepted unjudged."""
    fallback = validate and len(reference) < settings.min_reference_cases
    if fallback and settings.fallback == DEFER:
        kept = plan(labelled, len(reference), len(replay), settings, learning=False)
        reason = (
            f"not learned yet: the reference set holds {len(reference)} of the {settings.min_reference_cases} "
            "series a step is judged on; this series joins it (learning.fallback: defer)"
        )
        logger.info("learning step: %s", reason)
        verdict = Verdict(False, reason, None, None, len(reference), 0)
        return StepResult(active, verdict, [], [], 0, plan=kept, deferred=True)
    step_plan = plan(labelled, len(reference), len(replay), settings)
    if not validate:  # no step is judged: nothing to keep unlearned, every labelled slice is learned
        step_plan = replace(step_plan, learn=sorted({int(z) for z in labelled}))
    learn_zs, held = (
        holdout(step_plan.learn, settings.holdout_every, settings.min_learning_slices)
        if fallback
        else (step_plan.learn, [])
    )
    if fallback and step_plan.role == REFERENCE:
        held = sorted(held + step_plan.kept)  # unlearned as well: they validate this step too
    old = replay_cases(replay, settings.replay_slices)
    if old and not active.supports_replay():
        logger.warning("%r carries learning code without replay; learning without the replay buffer", active)
        old = []
    candidate = active.learn(
        image, labels, spacing, slices=learn_zs, replay=old or None, overrides=overrides, progress=progress
    )
    if not validate:
        verdict = Verdict(True, "accepted unvalidated: the guard is switched off", None, None, 0, 0)
        return StepResult(candidate, verdict, learn_zs, held, sum(len(c[0]) for c in old), plan=step_plan)
    hold_case = make_case("held-out", image, labels, spacing, held) if held else None
    replayed = sum(len(c[0]) for c in old)
    spent = tolerance_spent(active)

    def judged(pkg: ModelPackage) -> Verdict:
        return judge(
            pkg,
            active,
            reference,
            hold_case,
            tolerance=settings.tolerance,
            min_cases=settings.min_reference_cases,
            spent=spent,
        )

    verdict = judged(candidate)
    logger.info("learning step: %s", verdict.reason)
    alpha: float | None = None
    full, stepped = verdict, candidate
    for alpha in settings.soften if full.candidate_dice is not None and not full.accepted else ():
        softened = soften(active, stepped, alpha)
        retry = judged(softened)
        note = f"softened ×{alpha:g} after the full step was {full.reason}"
        logger.info("learning step: %s: %s", note, retry.reason)
        verdict = replace(retry, reason=f"{retry.reason}; {note}")
        candidate = softened
        if verdict.accepted:
            break
    if verdict.accepted:
        candidate = with_spent(candidate, verdict.spent)
    return StepResult(candidate, verdict, learn_zs, held, replayed, alpha, step_plan)


def admit(
    key: str, image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], step: StepResult
) -> tuple[str, SiteCase]:
    """The role and the kept slices of a newly approved series (after its learning step)."""
    if step.plan is None:
        raise ValueError("the step has no plan: it was not made by guarded_step")
    return step.plan.role, make_case(key, image, labels, spacing, step.plan.kept)
