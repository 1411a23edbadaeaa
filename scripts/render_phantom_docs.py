"""Render the pictures of docs/phantom.md: one per region and contrast, label overlays, fatty replacement.

    .venv/bin/python scripts/render_phantom_docs.py [--out docs/img]

Every picture is stamped SYNTHETIC. Deterministic: the same code draws the same pictures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.labels import region_labels
from models.phantom import Phantom, PhantomSpec, generate

SEEDS = {"leg": 3, "thigh": 3}
LEVEL = {"leg": 0.62, "thigh": 0.5}
NAMES = {"pd": "PD-weighted", "t1": "T1-weighted", "t2fs": "T2-weighted fat-saturated"}


def _slice_at(ph: Phantom, level: float) -> int:
    levels = np.asarray(ph.acquisition["levels"], float)
    return int(np.argmin(np.abs(levels - level)))


def _crop(ph: Phantom, k: int) -> tuple[slice, slice]:
    body = ph.tissue[k] > 0 if ph.tissue is not None else ph.image[k] > ph.image[k].mean()
    ys, xs = np.nonzero(body)
    pad = 12
    return (
        slice(max(ys.min() - pad, 0), min(ys.max() + pad, ph.shape[1])),
        slice(max(xs.min() - pad, 0), min(xs.max() + pad, ph.shape[2])),
    )


def _stamp(ax, text: str) -> None:  # type: ignore[no-untyped-def]
    ax.text(
        0.01,
        0.98,
        "SYNTHETIC",
        transform=ax.transAxes,
        color="#ffcc00",
        fontsize=13,
        fontweight="bold",
        va="top",
    )
    ax.text(0.01, 0.02, text, transform=ax.transAxes, color="white", fontsize=8, va="bottom")
    ax.set_axis_off()


def _orientation(ax) -> None:  # type: ignore[no-untyped-def]
    ax.text(0.02, 0.5, "R", transform=ax.transAxes, color="white", fontsize=10, va="center")
    ax.text(0.98, 0.5, "L", transform=ax.transAxes, color="white", fontsize=10, va="center", ha="right")


def render_contrast(region: str, contrast: str, out: Path) -> Path:
    """One axial slice of one region and contrast, both limbs, radiological view."""
    import matplotlib.pyplot as plt

    ph = generate(PhantomSpec(region, contrast, SEEDS[region], n_slices=30, matrix=432))  # type: ignore[arg-type]
    k = _slice_at(ph, LEVEL[region])
    rows, cols = _crop(ph, k)
    img = ph.image[k][rows, cols]
    hi = float(np.percentile(ph.image[k][ph.tissue[k] > 0] if ph.tissue is not None else img, 99.5))
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * img.shape[0] / img.shape[1] + 0.3), dpi=90)
    ax.imshow(img, cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
    dz, dy, _ = ph.spacing
    _stamp(ax, f"{region} {NAMES[contrast]} · seed {ph.spec.seed} · slice {k + 1}/{ph.shape[0]} · "
               f"{dy:.2f} mm pixels, {dz:.1f} mm slices · SNR {ph.spec.snr:.0f}")  # fmt: skip
    _orientation(ax)
    fig.subplots_adjust(0, 0, 1, 1)
    path = out / f"phantom_{region}_{contrast}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def render_labels(region: str, out: Path) -> Path:
    """T1 slice with the ground-truth labels and a legend of the muscles."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ph = generate(PhantomSpec(region, "t1", SEEDS[region], n_slices=30, matrix=432))  # type: ignore[arg-type]
    k = _slice_at(ph, LEVEL[region])
    rows, cols = _crop(ph, k)
    img = ph.image[k][rows, cols]
    lab = ph.labels[k][rows, cols]
    rgba = np.zeros((*lab.shape, 4))
    labels = region_labels(region)
    for entry in labels:
        rgba[lab == entry.value, :3] = np.asarray(entry.muscle.colour) / 255
        rgba[lab == entry.value, 3] = 0.55
    fig, ax = plt.subplots(figsize=(10.5, 7.5 * img.shape[0] / img.shape[1] + 0.3), dpi=90)
    ax.imshow(img, cmap="gray", vmin=0, vmax=float(np.percentile(img, 99.5)), interpolation="nearest")
    ax.imshow(rgba, interpolation="nearest")
    _stamp(ax, f"{region} T1 with ground-truth labels · seed {ph.spec.seed} · slice {k + 1}/{ph.shape[0]}")
    _orientation(ax)
    handles = [
        Patch(
            color=np.asarray(e.muscle.colour) / 255,
            label=f"{e.value}/{e.value + len(labels) // 2} {e.muscle.name}",
        )
        for e in labels
        if e.side == "right"
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="right/left value")
    fig.subplots_adjust(0, 0, 0.72, 1)
    path = out / f"phantom_{region}_labels.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def render_fat(out: Path) -> Path:
    """The same leg on T1, healthy and with graded fatty replacement of some muscles."""
    import matplotlib.pyplot as plt

    fat = {"soleus_right": 0.6, "gastrocnemius_medialis_right": 0.35, "gastrocnemius_medialis_left": 0.8}
    panels = []
    for infiltration in ({}, fat):
        ph = generate(PhantomSpec("leg", "t1", SEEDS["leg"], n_slices=30, matrix=432, fat_infiltration=infiltration))
        k = _slice_at(ph, LEVEL["leg"])
        rows, cols = _crop(ph, k)
        panels.append(ph.image[k][rows, cols])
    hi = float(np.percentile(panels[0], 99.5))
    fig, axes = plt.subplots(1, 2, figsize=(13, 13 * panels[0].shape[0] / panels[0].shape[1] / 2 + 0.3), dpi=90)
    for ax, img, title in zip(axes, panels, ("healthy", "fatty replacement (labels unchanged)"), strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
        _stamp(ax, f"leg T1 · {title}")
        _orientation(ax)
    axes[1].text(
        0.99, 0.02, "soleus R 0.6 · gastrocnemius med. R 0.35, L 0.8", transform=axes[1].transAxes,
        color="#ffcc00", fontsize=8, ha="right", va="bottom",
    )  # fmt: skip
    fig.subplots_adjust(0, 0, 1, 1, wspace=0.01)
    path = out / "phantom_leg_t1_fat.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def render_scanner(out: Path) -> Path:
    """The same leg on T1, default phantom and the ``site_b`` scanner profile (the learning experiment's)."""
    import matplotlib.pyplot as plt

    panels = []
    for scanner in (None, "site_b"):
        ph = generate(PhantomSpec("leg", "t1", SEEDS["leg"], n_slices=30, matrix=432, scanner=scanner))
        k = _slice_at(ph, LEVEL["leg"])
        rows, cols = _crop(ph, k)
        img = ph.image[k][rows, cols]
        panels.append(img / float(np.percentile(img, 99.5)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 13 * panels[0].shape[0] / panels[0].shape[1] / 2 + 0.3), dpi=90)
    titles = ("default phantom", "site_b scanner profile: faint fascia, fat streaks, partial volume, bias, noise")
    for ax, img, title in zip(axes, panels, titles, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1.0, interpolation="nearest")
        _stamp(ax, f"leg T1 · {title}")
        _orientation(ax)
    fig.subplots_adjust(0, 0, 1, 1, wspace=0.01)
    path = out / "phantom_leg_t1_site_b.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description="render the phantom pictures of docs/phantom.md")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = [render_contrast(r, c, args.out) for r in ("leg", "thigh") for c in ("pd", "t1", "t2fs")]
    written += [render_labels(r, args.out) for r in ("leg", "thigh")]
    written.append(render_fat(args.out))
    written.append(render_scanner(args.out))
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
