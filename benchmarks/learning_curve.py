"""The learning experiment: Dafne's local validation, reproduced on SYNTHETIC T1 leg phantoms.

Start from the PD-pretrained leg model of the zoo. The 25 subjects of group A (cohort ``learning_a_t1_leg``,
imaged by the ``site_b`` scanner profile: another scanner, realistic muscle) are processed in turn through
the node's own guarded learning (:mod:`dicom_node.work.guard`): the "radiologist" corrects 20 of the 25
slices to the ground truth, a learning step with replay makes a candidate, and the candidate becomes the next
generation only if it is not worse on the site's reference set (earlier approved subjects of A, never the
one just learned); otherwise the generation keeps the active model. Every generation is evaluated on all of
group A and on the 13 held-out subjects of group B (``learning_b_t1_leg``), on the slices an annotator
labels (5 evenly spread slices per subject; the paper labelled at least 5). Relative Dice (Dice minus the
subject's generation-0 Dice) is modelled against the generation with a linear mixed model (statsmodels
``mixedlm``: zero intercept, random slope per dataset), per group, as in the paper.

Dafne reports +0.009 (A) and +0.007 (B) Dice per generation, p < 0.001, median 0.66 → 0.73. Targets here:
a significant positive slope on both groups (p < 0.001), no generation whose median on B falls more than
0.01 below the previous one, and a median Dice on B after 25 generations ≥ 0.85.

    nice -n 5 .venv/bin/python benchmarks/learning_curve.py          # the full experiment (~30-60 min, 2 cores)
    .venv/bin/python benchmarks/learning_curve.py --generations 3 --subjects-a 3 --subjects-b 2 --out /tmp/q.json
    .venv/bin/python benchmarks/learning_curve.py --compare lr       # learning rate × epochs, short runs
    .venv/bin/python benchmarks/learning_curve.py --compare bn       # batch normalisation in the step
    ... --cache-dir /tmp/phantoms --checkpoint /tmp/run.json        # keep phantoms; per-generation checkpoint
    ... --learning class_balance=true --learning dice_weight=1       # any learning setting, for this run
    ... --save-weights /tmp/last.npz                                # the last generation's weights
    .venv/bin/python benchmarks/learning_curve.py --from-checkpoint /tmp/run.json   # statistics of a cut run
    .venv/bin/python benchmarks/learning_curve.py --joint 6        # all of A in one fine-tuning: the ceiling

Writes ``benchmarks/results/learning_curve.json`` and ``docs/img/learning_curve.png`` (``--compare lr``:
``benchmarks/results/learning_step_compare.json``; ``--compare bn``: ``learning_step_compare_bn.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


CORRECTED_SLICES = 20  # slices corrected and learned per subject (the step: 20 slices; the paper: at least 5)
GUARD_SOFTEN = (0.5, 0.25)  # the node's default ``learning.soften``
EVAL_SLICES = 5  # slices per subject the Dice is measured on (the paper: the at least 5 labelled ones)


def spread_slices(ph: Any, n: int) -> list[int]:
    """``n`` slices evenly spread over the labelled slices of a phantom."""
    from dicom_node.work.guard import spread
    from dicom_node.work.learning_jobs import labelled_slice_indices

    return spread(labelled_slice_indices(ph.labels), n)


def eval_case(ph: Any) -> Any:
    """The evaluation slices of one subject as a site case (image, labels, spacing)."""
    from dicom_node.work.guard import make_case

    return make_case(f"seed:{ph.spec.seed}", ph.image, ph.labels, ph.spacing, spread_slices(ph, EVAL_SLICES))


def evaluate(pkg: Any, cases: list[Any]) -> list[float]:
    """Overall Dice (the paper's voxel-weighted mean) of ``pkg`` on each subject's evaluation slices."""
    from dicom_node.work.review import dice_scores

    out = []
    for case in cases:
        pred = pkg.apply(case.image, case.spacing)
        values = sorted(int(v) for v in np.unique(case.labels) if v)
        out.append(float(dice_scores(case.labels, pred, values)["overall"] or 0.0))
    return out


def mixed_model(dice: np.ndarray) -> dict[str, float]:
    """Slope of relative Dice per generation: mixedlm, zero intercept, random slope per dataset."""
    import pandas as pd
    import statsmodels.formula.api as smf

    n_gen, n_sub = dice.shape
    rel = dice - dice[0:1, :]
    df = pd.DataFrame(
        {
            "rel": rel.ravel(),
            "generation": np.repeat(np.arange(n_gen), n_sub).astype(float),
            "dataset": np.tile(np.arange(n_sub), n_gen),
        }
    )
    df = df[df["generation"] > 0]  # generation 0 is 0 by construction: it carries no information
    model = smf.mixedlm("rel ~ 0 + generation", df, groups=df["dataset"], re_formula="0 + generation")
    fit = None
    for method in ("lbfgs", "powell", "nm", "bfgs"):
        try:
            fit = model.fit(method=method, reml=True)
            break
        except (np.linalg.LinAlgError, ValueError) as exc:
            print(f"mixedlm with {method} failed ({exc}); trying the next optimiser", flush=True)
    if fit is None:
        raise RuntimeError("the mixed model could not be fitted with any optimiser")
    slope = float(fit.params["generation"])
    return {
        "slope": slope,
        "stderr": float(fit.bse["generation"]),
        "p_value": float(fit.pvalues["generation"]),
        "ci_low": float(fit.conf_int().loc["generation", 0]),
        "ci_high": float(fit.conf_int().loc["generation", 1]),
    }


def plot(dice_a: np.ndarray, dice_b: np.ndarray, stats: dict[str, Any], path: Path) -> None:
    """Figure 4 of the paper, redrawn: Dice per generation for both groups, medians and the fitted slopes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    gens = np.arange(dice_a.shape[0])
    for ax, dice, name in ((axes[0], dice_a, "A"), (axes[1], dice_b, "B")):
        for j in range(dice.shape[1]):
            ax.plot(gens, dice[:, j], color="0.75", lw=0.8)
        ax.plot(gens, np.median(dice, axis=1), color="C3", lw=2.2, label="median")
        s = stats[name]
        ax.plot(
            gens,
            np.median(dice[0]) + s["slope"] * gens,
            "k--",
            lw=1.2,
            label=f"slope {s['slope']:+.4f}/gen, p={s['p_value']:.1e}",
        )
        ax.set_title(f"Group {name} ({dice.shape[1]} SYNTHETIC T1 leg subjects)")
        ax.set_xlabel("model generation (incremental learning steps)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("Dice (voxel-weighted mean over muscles)")
    fig.suptitle("Laurel learning experiment on SYNTHETIC phantoms (PD-pretrained leg model, T1 data)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class Subject:
    """One SYNTHETIC subject of the experiment: its spec, image, ground truth and spacing."""

    spec: Any
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


def phantoms(cohort_name: str, n: int, cache_dir: Path | None) -> list[Subject]:
    """The cohort's SYNTHETIC phantoms, generated (or read back from ``cache_dir``, keyed by the spec)."""
    from models.phantom import cohort
    from models.zoo.build import phantom_case

    return [Subject(spec, *phantom_case(spec, cache_dir)) for spec in cohort(cohort_name, n)]


def run(
    group_a: list[Any],
    group_b: list[Any],
    n_gen: int,
    *,
    guard: bool = True,
    replay: bool = True,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
    checkpoint: Path | None = None,
    soften: tuple[float, ...] = GUARD_SOFTEN,
    guard_overrides: dict[str, Any] | None = None,
    corrected_slices: int = CORRECTED_SLICES,
    save_weights: Path | None = None,
) -> dict[str, Any]:
    """One run of the experiment: Dice per generation on both groups, verdicts and step timings (written
    to ``checkpoint`` after every generation, so a run cut short still shows how far it got); the last
    generation's weights go to ``save_weights`` (``.npz``, for analyses of the learned model)."""
    from dicom_node.work.guard import GuardSettings, admit, guarded_step
    from models.zoo import load_default

    extra: dict[str, Any] = dict(guard_overrides or {})
    if not replay:
        extra["replay_slices"] = 0
    settings = GuardSettings(soften=soften, **extra)
    eval_a = [eval_case(ph) for ph in group_a]
    eval_b = [eval_case(ph) for ph in group_b]
    pkg = load_default("leg")
    reference: list[Any] = []
    buffer: list[Any] = []
    dice_a: list[list[float]] = []
    dice_b: list[list[float]] = []
    steps: list[dict[str, Any]] = []
    for gen in range(n_gen + 1):
        t = time.perf_counter()
        if gen > 0 and not steps[-1]["accepted"]:  # the model did not change: the same Dice, not recomputed
            dice_a.append(list(dice_a[-1]))
            dice_b.append(list(dice_b[-1]))
        else:
            dice_a.append(evaluate(pkg, eval_a))
            dice_b.append(evaluate(pkg, eval_b))
        if not quiet:
            print(
                f"generation {gen:2d}: median Dice A {np.median(dice_a[-1]):.3f}  B {np.median(dice_b[-1]):.3f}"
                f"  (eval {time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        if checkpoint is not None:
            checkpoint.write_text(json.dumps({"partial": True, "dice_a": dice_a, "dice_b": dice_b, "steps": steps}))
        if gen == n_gen:
            if save_weights is not None:
                np.savez(save_weights, *pkg.weights)
            break
        ph = group_a[gen]
        corrected = ph.labels  # the simulated radiologist's correction: the ground truth
        labelled = spread_slices(ph, corrected_slices)
        t = time.perf_counter()
        step = guarded_step(
            pkg, ph.image, corrected, ph.spacing, labelled, reference, buffer, settings, overrides=overrides
        )
        seconds = time.perf_counter() - t
        accepted = step.verdict.accepted or not guard
        steps.append(
            {
                "generation": gen + 1,
                "accepted": accepted,
                "reason": step.verdict.reason,
                "learned_slices": len(step.learned),
                "replayed_slices": step.replayed,
                "softened": step.softened,
                "learn_and_validate_seconds": round(seconds, 2),
                "learn_seconds": step.candidate.metadata["history"][-1].get("seconds"),
            }
        )
        if not quiet:
            print(f"  step {gen + 1}: {step.verdict.reason} ({seconds:.0f} s)", flush=True)
        if accepted:
            pkg = step.candidate
        role, case = admit(f"seed:{ph.spec.seed}", ph.image, corrected, ph.spacing, step)
        kept = reference if role == "reference" else buffer
        kept.append(case)
        del kept[: max(len(kept) - (settings.reference_cases if role == "reference" else settings.replay_cases), 0)]
    return {"dice_a": np.array(dice_a), "dice_b": np.array(dice_b), "steps": steps}


def worst_drop(dice: np.ndarray) -> float:
    """The largest fall of the median from one generation to the next (0 if it never falls)."""
    med = np.median(dice, axis=1)
    return float(max(0.0, -float(np.min(np.diff(med))))) if len(med) > 1 else 0.0


COMPARE: dict[str, tuple[tuple[str, dict[str, Any], bool, bool], ...]] = {
    "lr": (
        ("lr 1e-3, 5 epochs (Dafne)", {"learning_rate": 1e-3, "epochs": 5}, True, False),
        ("lr 5e-4, 5 epochs", {"learning_rate": 5e-4, "epochs": 5}, True, False),
        ("lr 2e-3, 5 epochs", {"learning_rate": 2e-3, "epochs": 5}, True, False),
        ("lr 1e-3, 3 epochs", {"learning_rate": 1e-3, "epochs": 3}, True, False),
    ),
    "bn": (
        ("batch statistics, momentum 0.9 (the network's)", {"freeze_bn": False}, True, False),
        ("batch statistics, momentum 0.99", {"freeze_bn": False, "bn_momentum": 0.99}, True, False),
        ("frozen statistics", {"freeze_bn": True}, True, False),
    ),
    "augment": (
        ("frozen statistics", {"freeze_bn": True}, True, False),
        ("frozen statistics, augmented batches", {"freeze_bn": True, "augment": True}, True, False),
    ),
}


def compare(group_a: list[Any], group_b: list[Any], n_gen: int, out: Path, grid: str = "lr") -> int:
    """Short runs of the learning step's settings (no guard, so the step itself is compared; every
    generation learns, the first ones with held-out slices)."""
    rows = []
    for label, overrides, replay, guard in COMPARE[grid]:
        t = time.perf_counter()
        res = run(
            group_a,
            group_b,
            n_gen,
            guard=guard,
            replay=replay,
            overrides=overrides,
            quiet=True,
            guard_overrides={"fallback": "holdout"},
        )
        b = res["dice_b"]
        learn = [s["learn_seconds"] for s in res["steps"] if s["learn_seconds"] is not None]
        row = {
            "setting": label,
            "overrides": overrides,
            "replay": replay,
            "median_b": [round(float(v), 4) for v in np.median(b, axis=1)],
            "gain_b": round(float(np.median(b[-1]) - np.median(b[0])), 4),
            "worst_drop_b": round(worst_drop(b), 4),
            "median_a_last": round(float(np.median(res["dice_a"][-1])), 4),
            "learn_seconds_median": round(float(np.median(learn)), 2) if learn else None,
        }
        rows.append(row)
        print(
            f"{label:55s} B {row['median_b'][0]:.3f} -> {row['median_b'][-1]:.3f} (gain {row['gain_b']:+.3f}, "
            f"worst drop {row['worst_drop_b']:.3f}); A last {row['median_a_last']:.3f}; "
            f"learn {row['learn_seconds_median']} s  [{time.perf_counter() - t:.0f} s]",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "grid": grid,
        "generations": n_gen,
        "subjects_a": len(group_a),
        "subjects_b": len(group_b),
        "runs": rows,
    }
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


def joint(
    group_a: list[Any], group_b: list[Any], epochs: int, out: Path, overrides: dict[str, Any] | None = None
) -> int:
    """The ceiling of what the step's settings can learn from group A: the PD model fine-tuned on all of
    A at once (the corrected slices of every subject in one step per epoch, a fresh optimiser each), the
    median Dice of B after every epoch. No guard, no order: what the incremental loop is measured against."""
    from models.zoo import load_default

    pkg = load_default("leg")
    first, rest = group_a[0], group_a[1:]
    stacks = []
    for ph in rest:
        zs = spread_slices(ph, CORRECTED_SLICES)
        stacks.append((ph.image[zs], ph.labels[zs], ph.spacing))
    eval_b = [eval_case(ph) for ph in group_b]
    medians = [float(np.median(evaluate(pkg, eval_b)))]
    print(f"joint fine-tuning on {len(group_a)} subjects of A: epoch 0 median B {medians[0]:.4f}", flush=True)
    for epoch in range(epochs):
        t = time.perf_counter()
        step = {**(overrides or {}), "epochs": 1, "seed": epoch}
        pkg = pkg.learn(
            first.image,
            first.labels,
            first.spacing,
            slices=spread_slices(first, CORRECTED_SLICES),
            replay=stacks,
            overrides=step,
        )
        medians.append(float(np.median(evaluate(pkg, eval_b))))
        print(f"  epoch {epoch + 1}: median B {medians[-1]:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"overrides": overrides or {}, "subjects_a": len(group_a), "median_b_per_epoch": medians}
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=None, help="learning steps (default: size of A)")
    parser.add_argument("--subjects-a", type=int, default=25)
    parser.add_argument("--subjects-b", type=int, default=13)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default under benchmarks/results)")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "learning_curve.png")
    parser.add_argument("--no-guard", action="store_true", help="activate every candidate (the unguarded loop)")
    parser.add_argument("--no-replay", action="store_true", help="learn from the new series only")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the package's setting")
    parser.add_argument("--epochs", type=int, default=None, help="override the package's setting")
    parser.add_argument(
        "--learning", action="append", default=[], metavar="KEY=VALUE", help="any other learning setting (JSON value)"
    )
    parser.add_argument(
        "--soften", default="0.5,0.25", help="comma-separated softening factors of a rejected candidate ('' for none)"
    )
    parser.add_argument("--reference-cases", type=int, default=None, help="series in the reference set")
    parser.add_argument("--case-slices", type=int, default=None, help="labelled slices kept per series")
    parser.add_argument("--replay-slices", type=int, default=None, help="replayed slices mixed into a step")
    parser.add_argument("--tolerance", type=float, default=None, help="the guard's tolerance (Dice)")
    parser.add_argument("--fallback", choices=("defer", "holdout"), default=None, help="while the reference set fills")
    parser.add_argument(
        "--compare", choices=tuple(COMPARE), default=None, help="compare learning step settings (short runs)"
    )
    parser.add_argument(
        "--corrected-slices", type=int, default=CORRECTED_SLICES, help="slices corrected and learned per subject"
    )
    parser.add_argument("--bn-momentum", type=float, default=None, help="moving statistics' momentum in a step")
    parser.add_argument(
        "--batch-statistics", action="store_true", help="normalise each batch by its own statistics (before)"
    )
    parser.add_argument(
        "--joint", type=int, default=None, metavar="EPOCHS", help="fine-tune on all of A at once (the ceiling)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep generated phantoms here")
    parser.add_argument("--checkpoint", type=Path, default=None, help="partial results after every generation")
    parser.add_argument("--save-weights", type=Path, default=None, help="the last generation's weights (.npz)")
    parser.add_argument("--from-checkpoint", type=Path, default=None, help="summarise a checkpoint, run nothing")
    args = parser.parse_args(argv)
    results = REPO / "benchmarks" / "results"
    if args.from_checkpoint is not None:
        return from_checkpoint(args.from_checkpoint, args.out or results / "learning_curve.json", args.plot)

    t0 = time.perf_counter()
    group_a = phantoms("learning_a_t1_leg", args.subjects_a, args.cache_dir)
    group_b = phantoms("learning_b_t1_leg", args.subjects_b, args.cache_dir)
    n_gen = min(args.generations or len(group_a), len(group_a))
    print(
        f"SYNTHETIC phantoms: A={len(group_a)}, B={len(group_b)} subjects generated in "
        f"{time.perf_counter() - t0:.1f} s; {n_gen} generations",
        flush=True,
    )
    if args.compare:
        name = "learning_step_compare.json" if args.compare == "lr" else f"learning_step_compare_{args.compare}.json"
        return compare(group_a, group_b, n_gen, args.out or results / name, args.compare)
    overrides: dict[str, Any] = {
        k: v
        for k, v in (
            ("learning_rate", args.learning_rate),
            ("epochs", args.epochs),
            ("bn_momentum", args.bn_momentum),
            ("freeze_bn", False if args.batch_statistics else None),
        )
        if v is not None
    }
    for item in args.learning:
        key, _, value = item.partition("=")
        overrides[key.strip()] = json.loads(value)
    if args.joint is not None:
        return joint(group_a, group_b, args.joint, args.out or results / "learning_joint.json", overrides or None)
    soften = tuple(float(v) for v in args.soften.split(",") if v.strip())
    guard_overrides = {
        k: v
        for k, v in (
            ("reference_cases", args.reference_cases),
            ("case_slices", args.case_slices),
            ("replay_slices", args.replay_slices),
            ("tolerance", args.tolerance),
            ("fallback", args.fallback),
        )
        if v is not None
    }
    res = run(
        group_a,
        group_b,
        n_gen,
        guard=not args.no_guard,
        replay=not args.no_replay,
        overrides=overrides or None,
        checkpoint=args.checkpoint,
        soften=soften,
        guard_overrides=guard_overrides,
        corrected_slices=args.corrected_slices,
        save_weights=args.save_weights,
    )
    learning = {
        "guard": not args.no_guard,
        "replay": not args.no_replay,
        "overrides": overrides,
        "soften": list(soften),
        "guard_overrides": guard_overrides,
        "corrected_slices": args.corrected_slices,
        "eval_slices": EVAL_SLICES,
    }
    return summarise(
        res["dice_a"], res["dice_b"], res["steps"], learning, args.out or results / "learning_curve.json", args.plot, t0
    )


def summarise(
    a: np.ndarray,
    b: np.ndarray,
    steps: list[dict[str, Any]],
    learning: dict[str, Any],
    out: Path,
    plot_path: Path,
    t0: float | None = None,
) -> int:
    """Statistics, targets, the result file and the plot of a run (or of a checkpoint of one)."""
    n_gen = a.shape[0] - 1
    learn_seconds = [s["learn_seconds"] for s in steps if s["learn_seconds"] is not None]
    stats = {"A": mixed_model(a), "B": mixed_model(b)}
    med_b = np.median(b, axis=1)
    result = {
        "data": "SYNTHETIC T1 leg phantoms, site_b scanner profile (cohorts learning_a_t1_leg, learning_b_t1_leg)",
        "start_model": "zoo leg (PD-pretrained)",
        "learning": learning,
        "generations": n_gen,
        "dice_a": a.round(5).tolist(),
        "dice_b": b.round(5).tolist(),
        "median_a": {"first": float(np.median(a[0])), "last": float(np.median(a[-1]))},
        "median_b": {"first": float(med_b[0]), "last": float(med_b[-1]), "per_generation": med_b.round(4).tolist()},
        "worst_drop_b": worst_drop(b),
        "mixed_model": stats,
        "steps": steps,
        "accepted": sum(1 for s in steps if s["accepted"]),
        "learn_seconds_median": float(np.median(learn_seconds)) if learn_seconds else None,
        "wall_seconds": time.perf_counter() - t0 if t0 is not None else None,
        "reference": {"dafne_slope_a": 0.009, "dafne_slope_b": 0.007, "dafne_median": [0.66, 0.73]},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(a, b, stats, plot_path)
    for name in ("A", "B"):
        s = stats[name]
        med = result[f"median_{name.lower()}"]
        print(
            f"group {name}: slope {s['slope']:+.4f} Dice/generation (95% CI {s['ci_low']:+.4f}..{s['ci_high']:+.4f},"
            f" p={s['p_value']:.2e}); median {med['first']:.3f} -> {med['last']:.3f}"
        )
    targets = {
        "slopes p < 0.001 and positive": all(stats[g]["p_value"] < 1e-3 and stats[g]["slope"] > 0 for g in "AB"),
        "no median-B drop > 0.01": result["worst_drop_b"] <= 0.01,
        "median B >= 0.85 at the end": result["median_b"]["last"] >= 0.85,
    }
    for k, ok in targets.items():
        print(f"target {k}: {'met' if ok else 'NOT met'}")
    print(
        f"worst generation-to-generation drop of median B {result['worst_drop_b']:.4f}; "
        f"{result['accepted']}/{n_gen} candidates activated"
    )
    print(f"wrote {out} and {plot_path}")
    return 0


def from_checkpoint(path: Path, out: Path, plot_path: Path) -> int:
    """Summarise the generations a checkpoint holds (a run cut short)."""
    data = json.loads(path.read_text())
    n = min(len(data["dice_a"]), len(data["dice_b"]))
    learning = {"guard": True, "replay": True, "overrides": {}, "corrected_slices": CORRECTED_SLICES}
    learning.update({"eval_slices": EVAL_SLICES, "partial": True})
    steps = data["steps"][: n - 1]
    return summarise(np.array(data["dice_a"][:n]), np.array(data["dice_b"][:n]), steps, learning, out, plot_path)


if __name__ == "__main__":
    raise SystemExit(main())
