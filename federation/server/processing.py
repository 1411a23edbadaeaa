"""Validate → merge → validate → publish: what happens to one update (Dafne's server rule, done safely).

1. The uploaded arrays are checked against the base version (count, shapes, dtypes, finiteness).
2. The candidate is the base version's package with the uploaded weights; its Dice on the private
   reference set must reach ``threshold``.
3. The candidate is merged into the *current* version with the configured strategy (``linear``: Dafne's
   weighted average; ``delta``: current + weight × discount^staleness × (candidate − base); ``partial``:
   SegViz, shared layers averaged and task layers taken from the candidate).
4. The merge must reach ``threshold`` and must not fall more than ``tolerance`` below the current version.
5. The merge is signed with the server key and published as version current + 1 (parent = current).

Only :mod:`federation.server.queue`'s single worker thread calls :meth:`Processor.process`, so the chain
of versions cannot fork and no update is merged into a version that has moved on meanwhile.

Exactly once across crashes: the new version and its update's ACCEPTED state are recorded in one
transaction (:meth:`Registry.publish` with ``accepted``), and an update that a published version already
lists in ``merged_updates`` is never merged again (a restart finds it and only records the outcome). The
named fault points ``federation.validating``, ``federation.merging`` and ``federation.publishing`` let the
restart tests stop the server at each step (:mod:`models.faults`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from federation.server import modelapi
from federation.server.config import FederationConfig
from federation.server.metrics import FederationMetrics
from federation.server.pseudonyms import SiteLabels
from federation.server.registry import ACCEPTED, REJECTED, Registry, UpdateInfo, UpdateOutcome, VersionInfo
from federation.server.signing import ServerKey
from federation.server.validation import ValidationResult, Validator
from federation.server.weights import WeightsError, check_weights, read_weights, weight_specs
from models.faults import reach

log = logging.getLogger(__name__)


class Processor:
    """Holds the few packages in use and applies the acceptance rule to queued updates."""

    def __init__(
        self,
        config: FederationConfig,
        registry: Registry,
        key: ServerKey,
        validator: Validator,
        metrics: FederationMetrics,
        *,
        labels: SiteLabels,
        cache_size: int = 6,
    ) -> None:
        self.config = config
        self.labels = labels  # how published packages name the site that trained them
        self.registry = registry
        self.key = key
        self.validator = validator
        self.metrics = metrics
        self._packages: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._packages_lock = threading.RLock()
        self._cache_size = cache_size
        self._dice_cache: dict[tuple[str, int, str], float] = {}

    # -- packages ------------------------------------------------------------------------------------
    def package(self, model: str, version: int) -> Any:
        """A published version as a ModelPackage, verified with the server's own key (cached)."""
        cache_key = (model, version)
        with self._packages_lock:
            if cache_key in self._packages:
                self._packages.move_to_end(cache_key)
                return self._packages[cache_key]
            pkg = modelapi.load_signed(self.registry.package_bytes(model, version), [self.key.public_key])
            self._remember(cache_key, pkg)
            return pkg

    def _remember(self, cache_key: tuple[str, int], pkg: Any) -> None:
        with self._packages_lock:
            self._packages[cache_key] = pkg
            self._packages.move_to_end(cache_key)
            while len(self._packages) > self._cache_size:
                self._packages.popitem(last=False)

    def _validate(self, model: str, pkg: Any, stage: str) -> ValidationResult:
        result = self.validator.evaluate(model, pkg)
        self.metrics.validation_seconds.labels(model=model, stage=stage).observe(result.seconds)
        return result

    def _publish(
        self,
        model: str,
        pkg: Any,
        result: ValidationResult,
        *,
        parent: int | None,
        merged_updates: list[str],
        strategy: str | None,
        accepted: UpdateOutcome | None = None,
        stop: threading.Event | None = None,
    ) -> VersionInfo:
        envelope = self.key.sign_package(modelapi.dumps(pkg))
        self.registry.packages.put(envelope)
        if merged_updates:
            reach("federation.publishing", stop)  # the package is stored; the version is not recorded yet
        info = self.registry.publish(
            model,
            version=modelapi.version_of(pkg),
            parent_version=parent,
            envelope=envelope,
            dice=result.dice,
            dice_detail=result.as_detail(),
            weight_specs=weight_specs(modelapi.weights_of(pkg)),
            merged_updates=merged_updates,
            strategy=strategy,
            accepted=accepted,
        )
        self._remember((model, info.version), pkg)
        self.metrics.model_version.labels(model=model).set(info.version)
        self.metrics.model_dice.labels(model=model).set(info.dice)
        return info

    # -- bootstrap -----------------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Register each configured model and publish the zoo package as its first version if none exists."""
        for name in self.config.models:
            latest = None
            with contextlib.suppress(LookupError):
                latest = self.registry.latest(name)
            if latest is not None:
                self.validator.prepare(name, self.registry.model_region(name))
                self.metrics.model_version.labels(model=name).set(latest.version)
                self.metrics.model_dice.labels(model=name).set(latest.dice)
                continue
            info = self.publish_initial(name, modelapi.load_default(name))
            log.info("bootstrapped %s version %d from the zoo (Dice %.4f)", name, info.version, info.dice)

    def publish_initial(self, name: str, pkg: Any) -> VersionInfo:
        """Start the history of model ``name`` with a trusted package (the zoo's, or one an admin imports)."""
        if self.registry.model_names().count(name) and self.registry.latest(name) is not None:
            raise RuntimeError(f"model {name} already has published versions")
        region = modelapi.region_of(pkg)
        self.registry.ensure_model(name, region)
        self.validator.prepare(name, region)
        result = self._validate(name, pkg, "bootstrap")
        return self._publish(name, pkg, result, parent=None, merged_updates=[], strategy=None)

    # -- the rule ------------------------------------------------------------------------------------
    def _current_dice(self, model: str, current: VersionInfo, pkg: Any) -> float:
        """The current version's Dice on today's reference set (re-measured if the set changed)."""
        fingerprint = self.validator.set_for(model).fingerprint
        if current.dice_detail.get("validation_set") == fingerprint:
            return current.dice
        key = (model, current.version, fingerprint)
        if key not in self._dice_cache:
            self._dice_cache[key] = self._validate(model, pkg, "current").dice
        return self._dice_cache[key]

    def process(self, update: UpdateInfo, stop: threading.Event | None = None) -> UpdateOutcome:
        """Apply validate → merge → validate → publish to one update; the outcome says what happened."""
        cfg_v, cfg_m = self.config.validation, self.config.merge
        model = update.model
        merged_in = self.registry.version_merging(model, update.uid)
        if merged_in is not None:  # published before a crash: record the outcome, never merge again
            log.warning("update %s was merged into %s version %d already", update.uid, model, merged_in.version)
            return UpdateOutcome(ACCEPTED, version=merged_in.version, merged_dice=merged_in.dice)
        current = self.registry.latest(model)
        if current is None:
            return UpdateOutcome(REJECTED, reason=f"model {model} has no published version")
        staleness = current.version - update.base_version
        if staleness > cfg_m.max_staleness:
            return UpdateOutcome(
                REJECTED,
                staleness=staleness,
                reason=f"stale: based on version {update.base_version}, {staleness} versions behind "
                f"the current "
                f"{current.version} (limit {cfg_m.max_staleness}); sync and learn again",
            )
        base_info = self.registry.version(model, update.base_version)
        try:
            weights = read_weights(
                self.registry.upload_bytes(update),
                max_bytes=int(self.config.server.max_weights_mb * 2**20),
                specs=base_info.weight_specs,
            )
            check_weights(weights, base_info.weight_specs)
        except WeightsError as exc:
            return UpdateOutcome(REJECTED, staleness=staleness, reason=f"invalid weights: {exc}")

        base = self.package(model, update.base_version)
        candidate = modelapi.with_weights(base, weights)
        reach("federation.validating", stop)
        cand = self._validate(model, candidate, "candidate")
        if cand.dice < cfg_v.threshold:
            return UpdateOutcome(
                REJECTED,
                candidate_dice=cand.dice,
                staleness=staleness,
                reason=f"candidate Dice {cand.dice:.4f} on the reference set is below the threshold "
                f"{cfg_v.threshold:.2f}",
            )

        reach("federation.merging", stop)
        current_pkg = self.package(model, current.version)
        current_dice = self._current_dice(model, current, current_pkg)
        merged = modelapi.merge(
            cfg_m.strategy,
            current=current_pkg,
            base=base,
            candidate=candidate,
            weight=cfg_m.weight,
            staleness=staleness,
            discount=cfg_m.staleness_discount,
            representation=cfg_m.representation_layers,
            task_from=cfg_m.task_from,
        )
        if modelapi.version_of(merged) != current.version + 1:
            raise RuntimeError(f"the merge produced version {modelapi.version_of(merged)}, not {current.version + 1}")
        merged = modelapi.annotate(
            merged,
            {
                "federation": {
                    "update": update.uid,
                    "site": self.labels.label(update.site),  # a pseudonym unless names are shown
                    "base_version": update.base_version,
                    "strategy": cfg_m.strategy,
                    "weight": cfg_m.weight,
                    "staleness": staleness,
                    "n_slices": update.n_slices,
                }
            },
        )
        res = self._validate(model, merged, "merged")
        common: dict[str, Any] = {
            "candidate_dice": cand.dice,
            "merged_dice": res.dice,
            "current_dice": current_dice,
            "staleness": staleness,
        }
        if res.dice < cfg_v.threshold:
            return UpdateOutcome(
                REJECTED,
                reason=f"merged Dice {res.dice:.4f} is below the threshold {cfg_v.threshold:.2f}",
                **common,
            )
        if res.dice < current_dice - cfg_v.tolerance:
            return UpdateOutcome(
                REJECTED,
                reason=f"merged Dice {res.dice:.4f} regresses from the current version {current.version}'s "
                f"{current_dice:.4f} by more than the tolerance {cfg_v.tolerance:.3f}",
                **common,
            )
        outcome = UpdateOutcome(ACCEPTED, **common)
        info = self._publish(
            model,
            merged,
            res,
            parent=current.version,
            merged_updates=[update.uid],
            strategy=cfg_m.strategy,
            accepted=outcome,
            stop=stop,
        )
        log.info(
            "update %s (site %s) accepted: %s version %d, Dice %.4f (candidate %.4f, was %.4f)",
            update.uid,
            update.site,
            model,
            info.version,
            res.dice,
            cand.dice,
            current_dice,
        )
        outcome.version = info.version
        return outcome

    def elapsed_since(self, update: UpdateInfo) -> float:
        """Seconds from upload to now (for the upload → published metric)."""
        if update.created_at is None:
            return 0.0
        return max(0.0, time.time() - update.created_at.timestamp())
