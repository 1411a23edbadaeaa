"""Which series goes to which model: the called AE title or rules on DICOM attributes, first match wins.

A series is routed once, when its first instance arrives (the routing attributes are series-level). A series
that matches no rule gets ``model = NULL`` and state ``UNROUTED``: it is kept for
``retention.unrouted_days``, listed by ``laurel status``, and never deleted earlier.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.config import RoutingRule
from dicom_node.core.db import Series, SeriesState


@dataclass(frozen=True)
class FieldCheck:
    """One regular expression of a rule against one attribute: the value seen and whether it matched."""

    keyword: str
    pattern: str
    value: str | None
    matched: bool


@dataclass(frozen=True)
class RuleVerdict:
    """What one rule made of a series: matched or not, and why (the called AE and every field)."""

    position: int
    model: str
    called_ae: str | None
    called_ae_matched: bool
    fields: tuple[FieldCheck, ...]

    @property
    def matched(self) -> bool:
        """Whether the rule matches (its called AE, if any, and every field)."""
        return self.called_ae_matched and all(f.matched for f in self.fields)


@dataclass(frozen=True)
class _CompiledRule:
    model: str
    called_ae: str | None
    match: tuple[tuple[str, re.Pattern[str]], ...]


class Router:
    """The configured routing rules, compiled once."""

    def __init__(self, rules: Sequence[RoutingRule]) -> None:
        self._rules = [
            _CompiledRule(
                rule.model,
                rule.called_ae,
                tuple((keyword, re.compile(pattern)) for keyword, pattern in rule.match.items()),
            )
            for rule in rules
        ]
        #: The DICOM keywords the rules look at (the receiver extracts these from every dataset).
        self.keywords: tuple[str, ...] = tuple(sorted({keyword for rule in self._rules for keyword, _ in rule.match}))
        #: AE titles that select a model; the SCP answers to these as well as to its own title.
        self.called_ae_titles: frozenset[str] = frozenset(r.called_ae for r in self._rules if r.called_ae)

    @property
    def rule_count(self) -> int:
        """How many rules there are."""
        return len(self._rules)

    def route(self, called_ae: str | None, attributes: Mapping[str, str | None]) -> str | None:
        """The model for a series, or ``None`` when no rule matches.

        A rule matches when its ``called_ae`` (if any) equals the called AE title and every regular
        expression in its ``match`` finds a match (``re.search``) in the attribute's value; a missing
        attribute never matches.
        """
        for verdict in self.explain(called_ae, attributes):
            if verdict.matched:
                return verdict.model
        return None

    def explain(self, called_ae: str | None, attributes: Mapping[str, str | None]) -> list[RuleVerdict]:
        """Every rule's verdict in order (the first that matched is the route): the console's rule tester."""
        called = (called_ae or "").strip()
        verdicts = []
        for position, rule in enumerate(self._rules, start=1):
            checks = tuple(
                FieldCheck(keyword, pattern.pattern, value, value is not None and pattern.search(value) is not None)
                for keyword, pattern in rule.match
                for value in (attributes.get(keyword),)
            )
            ae_ok = rule.called_ae is None or rule.called_ae == called
            verdicts.append(RuleVerdict(position, rule.model, rule.called_ae, ae_ok, checks))
        return verdicts


def unrouted_series(session: Session) -> list[Series]:
    """Series no rule routed to a model, oldest first (kept for retention.unrouted_days)."""
    return list(session.scalars(select(Series).where(Series.state == SeriesState.UNROUTED).order_by(Series.id)))


SEGMENTATION_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})


def is_own_result(sop_class_uid: str, attributes: dict[str, str | None]) -> bool:
    """Whether an instance is a SEG this node wrote (manufacturer and model name as :mod:`dicom_node.dicom.seg`
    sets)."""
    return (
        sop_class_uid in SEGMENTATION_CLASSES
        and attributes.get("Manufacturer") == "Laurel"
        and attributes.get("ManufacturerModelName") == "Laurel node"
    )
