"""The configuration page's forms: add or remove a peer, edit the routing rules.

Each form becomes a change of one reloadable section, handed whole to
:meth:`dicom_node.work.services.NodeServices.change_config` (validated with the field and the reason, saved
atomically, audited, reloaded without a restart: :mod:`dicom_node.core.config_changes`). This module only
turns form fields into that section's new value and a refusal back into messages next to the fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicom_node.core.config import NodeConfig
from dicom_node.core.config_changes import ConfigChangeError, Problem, reloadable_view

#: The fields of the add-peer form, in order.
PEER_FIELDS = ("name", "ae_title", "host", "port", "send_to_us", "receive_results", "tls")
_RULE_FIELD = re.compile(r"^rule-(\d{1,3})-(model|called_ae|match|order|delete)$")
MAX_RULES = 200


@dataclass
class RuleRow:
    """One routing rule as the form shows it (text as typed, so a refused change keeps what was typed)."""

    model: str = ""
    called_ae: str = ""
    match: str = ""
    errors: list[str] = field(default_factory=list)


def current_peers(config: NodeConfig) -> list[dict[str, Any]]:
    """The configured peers, JSON-ready, secrets masked (a masked value keeps the file's value on save)."""
    peers: list[dict[str, Any]] = reloadable_view(config).get("peers") or []
    return peers


def with_peer_added(config: NodeConfig, form: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The peers section with the form's new DIMSE peer appended (the port is validated with the rest)."""
    peer: dict[str, Any] = {key: str(form.get(key, "")).strip() for key in ("name", "ae_title", "host", "port")}
    if peer["port"].isdigit():
        peer["port"] = int(peer["port"])
    for flag in ("send_to_us", "receive_results", "tls"):
        peer[flag] = form.get(flag) == "on"
    return [*current_peers(config), peer]


def with_peer_removed(config: NodeConfig, name: str) -> list[dict[str, Any]]:
    """The peers section without the peer ``name``; :class:`ConfigChangeError` when there is none."""
    peers = current_peers(config)
    kept = [p for p in peers if p.get("name") != name]
    if len(kept) == len(peers):
        raise ConfigChangeError([Problem("peers", f"there is no peer named {name!r}")])
    return kept


def rule_rows(config: NodeConfig) -> list[RuleRow]:
    """The rules in force as form rows."""
    return [
        RuleRow(r.model, r.called_ae or "", "\n".join(f"{k}: {v}" for k, v in r.match.items())) for r in config.routing
    ]


def _parse_match(text: str, index: int) -> tuple[dict[str, str], list[Problem]]:
    match: dict[str, str] = {}
    problems = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, colon, pattern = line.partition(":")
        if not colon or not keyword.strip():
            problems.append(Problem(f"routing.{index}.match", f"{line.strip()!r}: write 'Keyword: regex'"))
            continue
        match[keyword.strip()] = pattern.strip()
    return match, problems


def routing_from_form(form: Mapping[str, Any]) -> tuple[list[RuleRow], list[dict[str, Any]], list[Problem]]:
    """The rules typed in the form, in the order given (deleted ones left out), as rows and as the section.

    Rows are ``rule-N-model``, ``rule-N-called_ae``, ``rule-N-match`` (``Keyword: regex`` per line),
    ``rule-N-order`` (a number; ties keep the form's order) and ``rule-N-delete``; a row with no model and
    no match is left out (the form's empty row for a new rule).
    """
    raw: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        found = _RULE_FIELD.match(key)
        if found and isinstance(value, str):
            raw.setdefault(int(found.group(1)), {})[found.group(2)] = value
    if len(raw) > MAX_RULES:
        raise ConfigChangeError([Problem("routing", f"at most {MAX_RULES} rules")])

    def order(item: tuple[int, dict[str, str]]) -> tuple[float, int]:
        text = item[1].get("order", "").strip()
        try:
            return (float(text), item[0])
        except ValueError:
            return (float(item[0]), item[0])

    rows: list[RuleRow] = []
    rules: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for _, fields in sorted(raw.items(), key=order):
        if fields.get("delete") == "on":
            continue
        row = RuleRow(fields.get("model", "").strip(), fields.get("called_ae", "").strip(), fields.get("match", ""))
        if not row.model and not row.match.strip() and not row.called_ae:
            continue
        match, bad = _parse_match(row.match, len(rules))
        problems += bad
        rule: dict[str, Any] = {"model": row.model, "match": match}
        if row.called_ae:
            rule["called_ae"] = row.called_ae
        rows.append(row)
        rules.append(rule)
    return rows, rules, problems


def attach_problems(rows: list[RuleRow], problems: list[Problem]) -> list[Problem]:
    """Put each ``routing.N…`` problem on its row; returns the problems that belong to no row."""
    loose = []
    for problem in problems:
        parts = problem.field.split(".")
        if len(parts) >= 2 and parts[0] == "routing" and parts[1].isdigit() and int(parts[1]) < len(rows):
            rows[int(parts[1])].errors.append(f"{problem.field}: {problem.reason}")
        else:
            loose.append(problem)
    return loose
