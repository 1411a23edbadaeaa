"""Reproducible cohorts of SYNTHETIC subjects, so tests, benchmarks and the demo draw from one source.

Every cohort owns a disjoint seed range (``base .. base + capacity - 1``); subject ``i`` of a cohort
is always the same spec. A fraction of subjects carry fatty replacement of a few muscles, as in a
neuromuscular clinic; which ones, and how much, also follows from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.labels import muscles
from models.phantom.spec import PhantomSpec

CAPACITY = 1000


@dataclass(frozen=True)
class CohortDef:
    """How the subjects of one cohort are drawn."""

    name: str
    region: str
    contrast: str
    size: int  # default number of subjects
    base_seed: int
    slice_thickness: float | None
    diseased_fraction: float
    purpose: str
    scanner: str | None = None  # a models.phantom.scanner profile: another scanner, realistic muscle


_DEFS: tuple[CohortDef, ...] = (
    CohortDef("pretrain_pd_leg", "leg", "pd", 44, 100_000, 5.0, 0.25, "pretraining of the leg model"),
    CohortDef("pretrain_pd_thigh", "thigh", "pd", 44, 101_000, 5.0, 0.25, "pretraining of the thigh model"),
    CohortDef("learning_a_t1_leg", "leg", "t1", 25, 110_000, 8.0, 0.4, "incremental learning, group A", "site_b"),
    CohortDef("learning_b_t1_leg", "leg", "t1", 13, 111_000, 8.0, 0.4, "incremental learning, group B", "site_b"),
    CohortDef("validation_pd_leg", "leg", "pd", 10, 120_000, 5.0, 0.25, "held-out validation (PD leg)"),
    CohortDef("validation_pd_thigh", "thigh", "pd", 10, 121_000, 5.0, 0.25, "held-out validation (PD thigh)"),
    CohortDef("validation_t1_leg", "leg", "t1", 10, 122_000, 8.0, 0.3, "held-out validation (T1 leg)"),
    CohortDef("validation_t1_thigh", "thigh", "t1", 10, 123_000, 8.0, 0.3, "held-out validation (T1 thigh)"),
    CohortDef("reference_pd_leg", "leg", "pd", 8, 130_000, 5.0, 0.25, "federation server reference data"),
    CohortDef("reference_pd_thigh", "thigh", "pd", 8, 131_000, 5.0, 0.25, "federation server reference data"),
    CohortDef("site_a_t1_leg", "leg", "t1", 12, 140_000, 8.0, 0.3, "federated site A local data"),
    CohortDef("site_b_t1_leg", "leg", "t1", 12, 141_000, 8.0, 0.3, "federated site B local data"),
    CohortDef("site_a_pd_thigh", "thigh", "pd", 12, 142_000, 5.0, 0.25, "federated site A local data"),
    CohortDef("site_b_pd_thigh", "thigh", "pd", 12, 143_000, 5.0, 0.25, "federated site B local data"),
    CohortDef("demo_t1_leg", "leg", "t1", 4, 150_000, 8.0, 0.5, "the demo"),
    CohortDef("demo_pd_thigh", "thigh", "pd", 4, 151_000, 5.0, 0.5, "the demo"),
    CohortDef("test_t2fs_leg", "leg", "t2fs", 4, 160_000, 6.0, 0.5, "tests of the T2 fat-sat contrast"),
)

COHORTS: dict[str, CohortDef] = {d.name: d for d in _DEFS}


def cohort_names() -> list[str]:
    """Names of all cohorts."""
    return list(COHORTS)


def _disease(d: CohortDef, seed: int) -> dict[str, float]:
    rng = np.random.default_rng([seed, 77])
    if rng.uniform() >= d.diseased_fraction:
        return {}
    keys = [m.key for m in muscles(d.region)]
    n = int(rng.integers(1, 4))
    chosen = rng.choice(len(keys), size=n, replace=False)
    return {keys[int(i)]: round(float(rng.uniform(0.15, 0.7)), 2) for i in chosen}


def cohort(name: str, n: int | None = None, *, limbs: str = "both") -> list[PhantomSpec]:
    """The specs of cohort ``name`` (first ``n`` subjects; default the cohort's size). Deterministic."""
    try:
        d = COHORTS[name]
    except KeyError:
        raise ValueError(f"unknown cohort {name!r}; known: {', '.join(COHORTS)}") from None
    count = d.size if n is None else int(n)
    if not 0 <= count <= CAPACITY:
        raise ValueError(f"cohort {name!r} holds at most {CAPACITY} subjects, asked for {count}")
    specs = []
    for i in range(count):
        seed = d.base_seed + i
        specs.append(
            PhantomSpec(
                region=d.region,  # type: ignore[arg-type]
                contrast=d.contrast,  # type: ignore[arg-type]
                seed=seed,
                limbs=limbs,  # type: ignore[arg-type]
                slice_thickness=d.slice_thickness,
                fat_infiltration=_disease(d, seed),
                scanner=d.scanner,
            )
        )
    return specs
