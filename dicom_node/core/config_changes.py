"""Changing the node's configuration while it runs: validate, diff, save atomically, audit, reload.

The entry point is :func:`apply_config_change` (the admin API and the console call it)::

    result = apply_config_change(
        config_path,
        {"peers": [...], "routing": [...]},   # new values of reloadable sections, JSON-ready
        actor="Dr Admin",
        engine=engine,                          # the index: the audit event goes there
        reload=services.request_reload,         # makes every process apply the saved file
    )

It raises :class:`ConfigChangeError` (``.field``, ``.reason``, ``.problems``) when the new values are
invalid: nothing is written and the configuration in force stays. Otherwise the YAML file is rewritten
atomically (temporary file, fsync, rename; the previous file kept as ``<name>.bak``) with only the given
sections replaced (every other section is kept as it is in the file), one ``config_change`` audit event
names the actor and summarises what changed (no secret values), and ``reload`` is called.

*Reloadable* sections (:func:`reloadable_sections`) are applied by the running processes without a restart:
``peers``, ``routing``, ``retention`` and, when the configuration has them, ``notifications`` /
``webhooks`` (and any section whose field is declared with ``json_schema_extra={"reloadable": True}``).
A change of ``node.ae_title``, ``node.host`` or ``node.port`` (:data:`LISTENER_FIELDS`) needs a new
listener: ``laurel serve`` restarts its intake process only. Other changes need a restart of the node and
are reported as such by :func:`diff_configs`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from dicom_node.core.config import NodeConfig, error_location

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

#: Sections applied without a restart, where the configuration has them (generic: a section added later
#: under one of these names, or declared ``json_schema_extra={"reloadable": True}``, just works).
RELOADABLE_CANDIDATES = ("peers", "routing", "retention", "notifications", "webhooks")
#: Fields of ``node`` whose change needs a new listener (the intake process is restarted, nothing else).
LISTENER_FIELDS = ("ae_title", "host", "port")
#: Audit actions.
CHANGE_ACTION = "config_change"
REFUSED_ACTION = "config_refused"
#: Shown instead of the value of a secret (keys whose name says token, secret, password, key, …).
MASK = "********"
_SECRET_KEY = re.compile(r"secret|token|password|passwd|api_?key|private|authori[sz]ation|signing", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One reason a configuration is refused: the dotted field (``routing.0.match``) and what is wrong."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ConfigChangeError(ValueError):
    """A configuration change refused; ``field`` and ``reason`` name the first problem, ``problems`` all."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            problems = [Problem("(top level)", "the configuration is invalid")]
        self.problems = problems
        self.field = problems[0].field
        self.reason = problems[0].reason
        super().__init__("; ".join(str(p) for p in problems))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the first field and reason, and every problem."""
        return {
            "field": self.field,
            "reason": self.reason,
            "problems": [{"field": p.field, "reason": p.reason} for p in self.problems],
        }


def reloadable_sections() -> tuple[str, ...]:
    """The top-level sections of :class:`NodeConfig` that the running node applies without a restart."""
    fields = NodeConfig.model_fields
    declared = [
        name
        for name, info in fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("reloadable")
    ]
    names = [name for name in RELOADABLE_CANDIDATES if name in fields]
    return tuple(names + [name for name in declared if name not in names])


# ---------------------------------------------------------------------- reading and validating
def read_config_data(path: Path) -> dict[str, Any]:
    """The YAML mapping of a configuration file (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigChangeError([Problem("(file)", f"{path} does not exist")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigChangeError([Problem("(file)", f"{path} is not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigChangeError([Problem("(file)", f"{path} must hold a mapping at the top level")])
    return data


def _problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        where = error_location(err["loc"])
        reason = str(err["msg"])
        reason = reason.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(Problem(where, reason))
    return problems


def validate_config_data(data: Mapping[str, Any]) -> NodeConfig:
    """A whole configuration from its YAML mapping, or :class:`ConfigChangeError` naming each bad field."""
    try:
        return NodeConfig(**dict(data))
    except ValidationError as exc:
        raise ConfigChangeError(_problems(exc)) from exc


def load_config_file(path: Path) -> NodeConfig:
    """Read and validate a configuration file (what a reload applies); :class:`ConfigChangeError` if bad."""
    return validate_config_data(read_config_data(path))


def proposed_config(path: Path, changes: Mapping[str, Any]) -> tuple[dict[str, Any], NodeConfig]:
    """The file's mapping with ``changes`` put in, and that mapping validated.

    ``changes`` holds reloadable sections (each replaced whole) and, optionally, ``node`` with some of
    :data:`LISTENER_FIELDS` (merged into the file's ``node`` section: the intake gets a new listener).

    A masked secret (:data:`MASK`, as :func:`reloadable_view` shows it) keeps the value in the file.
    """
    allowed = reloadable_sections()
    what = f"reloadable: {', '.join(allowed)}, and node.{'/'.join(LISTENER_FIELDS)}"
    problems = [
        Problem(name, f"not a reloadable section ({what})")
        for name in changes
        if name not in allowed and name != "node"
    ]
    listener = changes.get("node", {})
    if not isinstance(listener, Mapping):
        problems.append(Problem("node", f"a mapping of {', '.join(LISTENER_FIELDS)}"))
    else:
        problems += [
            Problem(f"node.{key}", "needs a restart of the node: change it in the file and restart laurel serve")
            for key in listener
            if key not in LISTENER_FIELDS
        ]
    if problems:
        raise ConfigChangeError(problems)
    data = read_config_data(path)
    for name, value in changes.items():
        if name == "node":
            node = data.get("node")
            data["node"] = {**(node if isinstance(node, dict) else {}), **value}
        else:
            data[name] = _unmask(value, data.get(name))
    return data, validate_config_data(data)


# ---------------------------------------------------------------------- viewing and comparing
def _is_secret(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if _is_secret(k) and v not in (None, "") else _masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _unmask(new: Any, old: Any) -> Any:
    if isinstance(new, dict):
        previous = old if isinstance(old, dict) else {}
        return {
            k: (previous.get(k) if v == MASK and _is_secret(k) else _unmask(v, previous.get(k))) for k, v in new.items()
        }
    if isinstance(new, list):
        previous_items = old if isinstance(old, list) else []
        by_name = {item.get("name"): item for item in previous_items if isinstance(item, dict) and "name" in item}
        return [_unmask(v, by_name.get(v.get("name")) if isinstance(v, dict) and "name" in v else None) for v in new]
    return new


def reloadable_view(config: NodeConfig) -> dict[str, Any]:
    """The reloadable sections of ``config``, JSON-ready, secrets masked (what ``GET /api/v1/config`` shows)."""
    dumped = config.model_dump(mode="json")
    return {name: _masked(dumped.get(name)) for name in reloadable_sections()}


def _item_key(index: int, item: Any) -> str:
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return str(item["name"])
    return f"#{index + 1}"


def _changed_keys(old: Any, new: Any) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    return [] if old == new else ["(value)"]


def _summarise_section(old: Any, new: Any) -> dict[str, Any]:
    """What changed in one section, without values that could be secret."""
    if isinstance(old, list) or isinstance(new, list):
        old_items = {_item_key(i, v): v for i, v in enumerate(old or [])}
        new_items = {_item_key(i, v): v for i, v in enumerate(new or [])}
        summary: dict[str, Any] = {
            "added": [k for k in new_items if k not in old_items],
            "removed": [k for k in old_items if k not in new_items],
            "changed": {
                k: _changed_keys(old_items[k], v) for k, v in new_items.items() if k in old_items and old_items[k] != v
            },
        }
        if list(old_items) != list(new_items) and not summary["added"] and not summary["removed"]:
            summary["reordered"] = True
        return {k: v for k, v in summary.items() if v}
    if isinstance(old, dict) and isinstance(new, dict):
        changes: dict[str, Any] = {}
        for key in _changed_keys(old, new):
            before, after = old.get(key), new.get(key)
            scalar = all(isinstance(v, (int, float, bool, type(None))) for v in (before, after))
            changes[key] = {"from": before, "to": after} if scalar and not _is_secret(key) else "changed"
        return {"changed": changes}
    return {"changed": "(value)"} if old != new else {}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


@dataclass(frozen=True)
class ConfigDiff:
    """What differs between the configuration in force and a new one."""

    #: reloadable section -> summary (added/removed/changed; no secret values)
    sections: dict[str, Any] = field(default_factory=dict)
    #: ``node.ae_title`` / ``node.host`` / ``node.port`` -> {"from", "to"}: the intake needs a new listener
    listener: dict[str, Any] = field(default_factory=dict)
    #: other dotted fields that changed: applied only by a restart of the node
    needs_restart: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything the running node applies has changed."""
        return bool(self.sections or self.listener)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the audit event's detail)."""
        out: dict[str, Any] = {"sections": self.sections}
        if self.listener:
            out["listener"] = self.listener
        if self.needs_restart:
            out["needs_restart"] = self.needs_restart
        return out


def diff_configs(old: NodeConfig, new: NodeConfig) -> ConfigDiff:
    """Compare two configurations: reloadable sections, listener fields, and what needs a restart."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    reloadable = reloadable_sections()
    sections = {
        name: _summarise_section(before.get(name), after.get(name))
        for name in reloadable
        if before.get(name) != after.get(name)
    }
    listener = {
        f"node.{name}": {"from": before["node"][name], "to": after["node"][name]}
        for name in LISTENER_FIELDS
        if before["node"][name] != after["node"][name]
    }
    rest_before = _flat({k: v for k, v in before.items() if k not in reloadable})
    rest_after = _flat({k: v for k, v in after.items() if k not in reloadable})
    needs_restart = sorted(
        k for k in {*rest_before, *rest_after} if rest_before.get(k) != rest_after.get(k) and k not in listener
    )
    return ConfigDiff(sections, listener, needs_restart)


def merge_reloadable(current: NodeConfig, new: NodeConfig, *, listener: bool = False) -> NodeConfig:
    """``current`` with the reloadable sections of ``new`` (and its listener fields when ``listener``)."""
    update: dict[str, Any] = {name: getattr(new, name) for name in reloadable_sections()}
    if listener:
        update["node"] = current.node.model_copy(update={name: getattr(new.node, name) for name in LISTENER_FIELDS})
    return current.model_copy(update=update)


# ---------------------------------------------------------------------- saving and auditing
def backup_path(path: Path) -> Path:
    """Where the previous version of a saved configuration file is kept."""
    return path.with_name(path.name + ".bak")


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key, as people write them (and as the shipped node.yaml is)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _dump(data: Mapping[str, Any]) -> str:
    return yaml.dump(dict(data), Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _section_spans(lines: list[str]) -> dict[str, tuple[int, int]]:
    """Top-level sections of a YAML text: name -> (first line, end line), the comments and blank lines at
    column 0 before the next section left to that section."""
    keys = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _TOP_KEY.match(line))]
    spans: dict[str, tuple[int, int]] = {}
    for n, (start, name) in enumerate(keys):
        end = keys[n + 1][0] if n + 1 < len(keys) else len(lines)
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        spans[name] = (start, end)
    return spans


def _scalar_edits(block: list[str], old: Any, new: Any) -> list[str] | None:
    """``block`` (one top-level mapping section) with only its changed scalar fields rewritten in place,
    their end-of-line comments kept; ``None`` when the change is not that simple."""
    if not isinstance(old, dict) or not isinstance(new, dict) or old.keys() != new.keys():
        return None
    out = list(block)
    for key, value in new.items():
        if value == old[key]:
            continue
        if isinstance(value, (dict, list)) or isinstance(old[key], (dict, list)):
            return None
        pattern = re.compile(rf"^(\s+{re.escape(str(key))}:\s*)(\S[^#]*?|)(\s+#.*)?$")
        hits = [i for i, line in enumerate(out) if pattern.match(line.rstrip("\n"))]
        if len(hits) != 1:
            return None
        match = pattern.match(out[hits[0]].rstrip("\n"))
        assert match is not None
        rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        comment = match.group(3) or ""
        if comment:
            rendered = rendered.ljust(len(match.group(2)))  # the comment stays in its column where it can
        out[hits[0]] = f"{match.group(1)}{rendered}{comment}\n"
    return out


def render_config(original: str, data: Mapping[str, Any], changed: Collection[str]) -> str:
    """The YAML text of ``data``, written as an edit of ``original``: only the ``changed`` top-level sections
    are rewritten (a changed scalar field in place, keeping its comment; otherwise the whole section), every
    other line, comments included, stays as it was. Falls back to a plain dump of ``data`` when the edit
    would not read back as ``data`` (an unusual layout)."""
    try:
        before = yaml.safe_load(original) or {}
    except yaml.YAMLError:
        before = {}
    lines = original.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    spans = _section_spans(lines)
    present = sorted((name for name in changed if name in spans), key=lambda name: spans[name][0], reverse=True)
    for name in present:  # from the bottom up, so the line numbers above stay valid
        start, end = spans[name]
        block = _scalar_edits(lines[start:end], before.get(name) if isinstance(before, dict) else None, data[name])
        lines[start:end] = block if block is not None else _dump({name: data[name]}).splitlines(keepends=True)
    text = "".join(lines)
    missing = {name: data[name] for name in changed if name not in spans and name in data}
    if missing:
        text = text.rstrip("\n") + "\n\n" + _dump(missing)
    try:
        if yaml.safe_load(text) == dict(data):
            return text
    except yaml.YAMLError:
        pass
    logger.warning("configuration layout not understood: the file is rewritten without its comments")
    return _dump(data)


def save_config_file(path: Path, data: Mapping[str, Any], changed: Collection[str] | None = None) -> None:
    """Write ``data`` as YAML over ``path`` atomically: temporary file in the same folder, fsync, the old file
    kept as ``<name>.bak``, rename, fsync of the folder. A crash leaves the old or the new file, never half.

    With ``changed`` (the top-level sections that changed) the file is edited, not rewritten: every other
    line keeps its comments (:func:`render_config`)."""
    path = Path(path)
    folder = path.parent
    edit = changed is not None and path.exists()
    text = render_config(path.read_text(), data, changed or ()) if edit else _dump(data)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ConfigChangeError(
            [Problem("(file)", f"cannot write in {folder} ({exc.strerror}): the node needs write access to it")]
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
            backup = backup_path(path)
            backup.unlink(missing_ok=True)
            os.link(path, backup)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def audit_config_event(engine: Engine, actor: str, action: str, detail: dict[str, Any]) -> None:
    """One audit event (``config_change`` or ``config_refused``) in the index."""
    from dicom_node.core.db import session_scope
    from dicom_node.core.review_tables import AuditEvent

    with session_scope(engine) as session:
        session.add(AuditEvent(operator=actor[:128], action=action, detail=detail))


@dataclass(frozen=True)
class ConfigChangeResult:
    """What :func:`apply_config_change` did."""

    diff: ConfigDiff
    saved: bool
    config: NodeConfig
    reload: Any = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: saved or not, the summary of the change, and the reload's outcome."""
        out: dict[str, Any] = {"saved": self.saved, "changed": self.diff.changed, **self.diff.as_dict()}
        if self.reload is not None:
            out["reload"] = self.reload if isinstance(self.reload, dict) else str(self.reload)
        return out


def apply_config_change(
    path: Path,
    changes: Mapping[str, Any],
    actor: str,
    *,
    engine: Engine | None,
    reload: Callable[[str], Any] | None = None,
    dry_run: bool = False,
) -> ConfigChangeResult:
    """Validate, save, audit and reload a change of reloadable sections (see the module docstring).

    ``changes`` maps section names to their new JSON-ready values (a masked secret keeps the file's value);
    ``actor`` is who makes the change (an admin's name); ``engine`` receives the audit event; ``reload``
    (called with ``actor`` after the save) makes the running processes apply the file and returns their
    outcome. ``dry_run`` validates and diffs only. Raises :class:`ConfigChangeError` when invalid (nothing
    written, nothing audited).
    """
    path = Path(path)
    current = load_config_file(path)
    data, new = proposed_config(path, changes)
    diff = diff_configs(current, new)
    if dry_run or not diff.changed:
        return ConfigChangeResult(diff, saved=False, config=new)
    save_config_file(path, data, changed=list(changes))
    logger.info("configuration %s changed by %s: %s", path, actor, ", ".join([*diff.sections, *diff.listener]))
    if engine is not None:
        audit_config_event(engine, actor, CHANGE_ACTION, {"source": "api", **diff.as_dict()})
    outcome: Any = None
    if reload is not None:
        try:
            outcome = reload(actor)
        except Exception as exc:  # saved and audited: the running node applies it at its next reload or start
            logger.error("configuration saved but the node did not confirm the reload: %s", exc)
            outcome = {"outcome": "not_confirmed", "error": str(exc)}
    return ConfigChangeResult(diff, saved=True, config=new, reload=outcome)
