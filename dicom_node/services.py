"""What the workflow code (pipeline, review, learning jobs, API) needs from a running node, in one object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dicom_node.config import NodeConfig
    from dicom_node.learning import ModelRegistry
    from dicom_node.metrics import NodeMetrics
    from federation.client import FederationClient


@dataclass
class NodeServices:
    """The node's configuration, index, metrics, model registry and (optional) federation client."""

    config: NodeConfig
    engine: Engine
    metrics: NodeMetrics
    registry: ModelRegistry
    federation: FederationClient | None = None

    @property
    def derived_dir(self) -> Path:
        """Where drafts, corrections and approved SEGs are kept (``storage_dir/derived``)."""
        return self.config.node.storage_dir / "derived"

    def result_dir(self, study_id: int, series_id: int) -> Path:
        """The folder of one series' results."""
        return self.derived_dir / str(study_id) / str(series_id)
