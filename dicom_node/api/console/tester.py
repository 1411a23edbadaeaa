"""The routing rule tester: which rule a series matches, which model would run, and why the others do not.

A series is read the way the intake reads it: the file's meta and dataset split as the recovery scan does
(:func:`dicom_node.intake.recovery.split_part10`) and the routing keywords taken by the intake's own parser
(:func:`dicom_node.intake.received.inspect_dataset`, no pixel decoding), so the tester sees the values the
intake routes on. The rules are the configured ones (:meth:`dicom_node.intake.routing.Router.explain`).
An uploaded file is parsed in memory and never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.core.config import NodeConfig
from dicom_node.core.db import Series, resolve_path
from dicom_node.intake.received import DatasetRefused, inspect_dataset
from dicom_node.intake.recovery import split_part10
from dicom_node.intake.routing import Router, RuleVerdict
from dicom_node.work.learning import ModelRegistry
from dicom_node.work.review import NotFound

#: The largest file the tester accepts (it only needs the header, but a file is parsed whole).
MAX_UPLOAD_BYTES = 32 << 20


class UnreadableFile(ValueError):
    """The file is not a DICOM Part-10 file the intake could read (HTTP 422 with this message)."""


@dataclass(frozen=True)
class TesterResult:
    """The tester's answer for one series or file."""

    source: str
    called_ae: str | None
    attributes: dict[str, str | None]
    verdicts: list[RuleVerdict]
    model_state: dict[str, Any] | None
    note: str = ""

    @property
    def winner(self) -> RuleVerdict | None:
        """The first rule that matched (first match wins), if any."""
        return next((v for v in self.verdicts if v.matched), None)


def read_attributes(raw: bytes, keywords: tuple[str, ...]) -> dict[str, str | None]:
    """The routing keywords' values in a Part-10 file, as the intake extracts them."""
    try:
        meta, data = split_part10(raw)
        header = inspect_dataset(data, meta["ts"], keywords)
    except (ValueError, DatasetRefused) as exc:
        raise UnreadableFile(f"the file cannot be read as the intake would: {exc}") from exc
    return {k: None if (v := header.attributes.get(k)) is None else str(v) for k in keywords}


def _result(
    source: str,
    called_ae: str | None,
    attributes: dict[str, str | None],
    config: NodeConfig,
    registry: ModelRegistry,
    note: str = "",
) -> TesterResult:
    router = Router(config.routing)
    verdicts = router.explain(called_ae, attributes)
    winner = next((v for v in verdicts if v.matched), None)
    state = None
    if winner is not None:
        try:
            state = registry.state(winner.model)
        except Exception as exc:
            state = {"name": winner.model, "error": str(exc)}
    return TesterResult(source, called_ae, attributes, verdicts, state, note)


def try_series(session: Session, config: NodeConfig, registry: ModelRegistry, series_id: int) -> TesterResult:
    """Test a received series: its first kept file, or (files deleted) the attributes the index holds."""
    series = session.get(Series, series_id)
    if series is None:
        raise NotFound(f"series {series_id} does not exist")
    keywords = Router(config.routing).keywords
    source = f"series {series.id} of study {series.study_id} (received, routed to {series.model or 'no model'})"
    paths = [resolve_path(config.node.storage_dir, i.path) for i in series.instances[:1]]
    if paths and series.files_deleted_at is None and paths[0].is_file():
        if paths[0].stat().st_size > MAX_UPLOAD_BYTES:
            raise UnreadableFile(f"{paths[0].name} is larger than {MAX_UPLOAD_BYTES >> 20} MiB")
        attributes = read_attributes(paths[0].read_bytes(), keywords)
        return _result(source, series.called_ae, attributes, config, registry)
    indexed = {
        "Modality": series.Modality,
        "SeriesDescription": series.SeriesDescription,
        "BodyPartExamined": series.BodyPartExamined,
    }
    attributes = {k: indexed.get(k) for k in keywords}
    note = "the files were deleted (retention): only the attributes the index keeps are known"
    return _result(source, series.called_ae, attributes, config, registry, note)


def try_upload(
    raw: bytes, filename: str, called_ae: str | None, config: NodeConfig, registry: ModelRegistry
) -> TesterResult:
    """Test an uploaded file (held in memory only) as if it arrived with ``called_ae``."""
    attributes = read_attributes(raw, Router(config.routing).keywords)
    called = (called_ae or "").strip() or config.node.ae_title
    return _result(f"uploaded file {filename!r}", called, attributes, config, registry)


def recent_series(session: Session, limit: int = 50) -> list[Series]:
    """The newest received series, for the tester's picker."""
    return list(session.scalars(select(Series).order_by(Series.id.desc()).limit(limit)))
