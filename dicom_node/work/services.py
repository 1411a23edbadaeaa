"""What the workflow code (pipeline, review, learning jobs, API) needs from a running node, in one object."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.core.db import resolve_path, stored_path

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dicom_node.core.config import NodeConfig
    from dicom_node.core.config_changes import ConfigChangeResult
    from dicom_node.core.db import Series
    from dicom_node.core.metrics import NodeMetrics
    from dicom_node.work.events import Events
    from dicom_node.work.learning import ModelRegistry
    from dicom_node.work.site_cases import SiteCaseStore
    from federation.client import FederationClient


@dataclass
class NodeServices:
    """The node's configuration, index, metrics, model registry and (optional) federation client."""

    config: NodeConfig
    engine: Engine
    metrics: NodeMetrics
    registry: ModelRegistry
    federation: FederationClient | None = None
    #: The YAML file the node was started from (``None``: built in memory; the config cannot be saved).
    config_path: Path | None = None
    #: Makes every process of the node apply the saved file (called with the actor); returns the outcome.
    request_reload: Callable[[str], Any] | None = None

    def change_config(self, changes: Mapping[str, Any], actor: str, *, dry_run: bool = False) -> ConfigChangeResult:
        """Validate, save, audit and reload new values of reloadable sections
        (:func:`dicom_node.core.config_changes.apply_config_change`); ``ConfigChangeError`` when invalid."""
        from dicom_node.core.config_changes import ConfigChangeError, Problem, apply_config_change

        if self.config_path is None:
            raise ConfigChangeError(
                [Problem("(file)", "this node was started without a configuration file; its config cannot be saved")]
            )
        return apply_config_change(
            self.config_path, changes, actor, engine=self.engine, reload=self.request_reload, dry_run=dry_run
        )

    @property
    def events(self) -> Events:
        """Webhook events, queued in the transaction of their cause (:mod:`dicom_node.work.events`)."""
        from dicom_node.work.events import Events

        return Events(self.config)

    @property
    def site_cases(self) -> SiteCaseStore:
        """The approved series kept on site for guarded learning (beside the model registry)."""
        from dicom_node.work.site_cases import SiteCaseStore

        return SiteCaseStore(self.engine, self.registry.models_dir)

    @property
    def derived_dir(self) -> Path:
        """Where drafts, corrections and approved SEGs are kept (``storage_dir/derived``)."""
        return self.config.node.storage_dir / "derived"

    def result_dir(self, study_id: int, series_id: int) -> Path:
        """The folder of one series' results."""
        return self.derived_dir / str(study_id) / str(series_id)

    def path(self, stored: str) -> Path:
        """The file a path recorded in the index names (recorded paths are relative to ``storage_dir``)."""
        return resolve_path(self.config.node.storage_dir, stored)

    def stored(self, path: Path) -> str:
        """How the index records ``path`` (relative to ``storage_dir``)."""
        return stored_path(self.config.node.storage_dir, path)

    def instance_paths(self, series: Series) -> list[Path]:
        """The stored files of a series' instances."""
        return [self.path(inst.path) for inst in series.instances]
