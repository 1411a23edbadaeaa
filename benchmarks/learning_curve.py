"""The learning experiment: Dafne's local validation, reproduced on SYNTHETIC T1 leg phantoms.

Start from the PD-pretrained leg model of the zoo. The 25 subjects of group A (cohort ``learning_a_t1_leg``)
are processed in turn through the node's own workflow functions: the active model predicts, the "radiologist"
corrects to the ground truth, and incremental learning on the labelled slices makes the next generation
(exactly what the node's ``learn`` job does). Every generation is evaluated on all of group A and on the 13
held-out subjects of group B (``learning_b_t1_leg``). Relative Dice (Dice minus the subject's generation-0
Dice) is modelled against the generation with a linear mixed model (statsmodels ``mixedlm``: zero intercept,
random slope per dataset), per group, as in the paper.

Dafne reports +0.009 (A) and +0.007 (B) Dice per generation, p < 0.001, median 0.66 → 0.73. Target here: a
significant positive slope on both groups and a median Dice on B after 25 generations ≥ 0.85.

    .venv/bin/python benchmarks/learning_curve.py                # the full experiment (~30-60 min on 2 cores)
    .venv/bin/python benchmarks/learning_curve.py --generations 3 --subjects-a 3 --subjects-b 2   # a quick look

Writes ``benchmarks/results/learning_curve.json`` and ``docs/img/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def labelled_slices(labels: np.ndarray) -> list[int]:
    """The slices a correction labels (what the node's learn job trains on)."""
    from dicom_node.work.learning_jobs import labelled_slice_indices

    return labelled_slice_indices(labels)


def evaluate(pkg: Any, subjects: list[Any]) -> list[float]:
    """Overall Dice (the paper's voxel-weighted mean) of ``pkg`` on each subject."""
    from dicom_node.work.review import dice_scores

    out = []
    for ph in subjects:
        pred = pkg.apply(ph.image, ph.spacing)
        values = sorted(int(v) for v in ph.label_names)
        out.append(float(dice_scores(ph.labels, pred, values)["overall"] or 0.0))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=None, help="learning steps (default: size of A)")
    parser.add_argument("--subjects-a", type=int, default=25)
    parser.add_argument("--subjects-b", type=int, default=13)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "learning_curve.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "learning_curve.png")
    args = parser.parse_args(argv)

    from models.phantom import cohort, generate
    from models.zoo import load_default

    t0 = time.perf_counter()
    group_a = [generate(s) for s in cohort("learning_a_t1_leg", args.subjects_a)]
    group_b = [generate(s) for s in cohort("learning_b_t1_leg", args.subjects_b)]
    n_gen = min(args.generations or len(group_a), len(group_a))
    print(
        f"SYNTHETIC phantoms: A={len(group_a)}, B={len(group_b)} subjects generated in "
        f"{time.perf_counter() - t0:.1f} s; {n_gen} generations",
        flush=True,
    )

    pkg = load_default("leg")
    dice_a, dice_b, learn_seconds = [], [], []
    for gen in range(n_gen + 1):
        t = time.perf_counter()
        dice_a.append(evaluate(pkg, group_a))
        dice_b.append(evaluate(pkg, group_b))
        print(
            f"generation {gen:2d}: median Dice A {np.median(dice_a[-1]):.3f}  B {np.median(dice_b[-1]):.3f}"
            f"  (eval {time.perf_counter() - t:.0f} s)",
            flush=True,
        )
        if gen == n_gen:
            break
        ph = group_a[gen]
        corrected = ph.labels  # the simulated radiologist's correction: the ground truth
        t = time.perf_counter()
        pkg = pkg.learn(ph.image, corrected, ph.spacing, slices=labelled_slices(corrected))
        learn_seconds.append(time.perf_counter() - t)

    a, b = np.array(dice_a), np.array(dice_b)
    stats = {"A": mixed_model(a), "B": mixed_model(b)}
    result = {
        "data": "SYNTHETIC T1 leg phantoms (cohorts learning_a_t1_leg, learning_b_t1_leg)",
        "start_model": "zoo leg (PD-pretrained)",
        "generations": n_gen,
        "dice_a": a.round(5).tolist(),
        "dice_b": b.round(5).tolist(),
        "median_a": {"first": float(np.median(a[0])), "last": float(np.median(a[-1]))},
        "median_b": {"first": float(np.median(b[0])), "last": float(np.median(b[-1]))},
        "mixed_model": stats,
        "learn_seconds_median": float(np.median(learn_seconds)) if learn_seconds else None,
        "wall_seconds": time.perf_counter() - t0,
        "reference": {"dafne_slope_a": 0.009, "dafne_slope_b": 0.007, "dafne_median": [0.66, 0.73]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(a, b, stats, args.plot)
    for name in ("A", "B"):
        s = stats[name]
        med = result[f"median_{name.lower()}"]
        print(
            f"group {name}: slope {s['slope']:+.4f} Dice/generation (95% CI {s['ci_low']:+.4f}..{s['ci_high']:+.4f},"
            f" p={s['p_value']:.2e}); median {med['first']:.3f} -> {med['last']:.3f}"
        )
    print(
        f"Dafne: +0.009 (A), +0.007 (B), p<0.001, median 0.66 -> 0.73.  Target: median B >= 0.85 "
        f"-> {'met' if result['median_b']['last'] >= 0.85 else 'NOT met'}"
    )
    print(f"wrote {args.out} and {args.plot} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
