"""``/config``: the reloadable sections of the node's configuration, read, validated and saved by an admin.

Thin routes over :meth:`dicom_node.work.services.NodeServices.change_config`; an invalid change is a 422
whose body names the field and the reason (``field``, ``reason``, ``problems``), and the configuration in
force stays.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from dicom_node.api.deps import Admin, Services
from dicom_node.core.config_changes import LISTENER_FIELDS, reloadable_sections, reloadable_view

router = APIRouter()

_CHANGES = Body(
    ...,
    description="new values of reloadable sections (each replaced whole), and optionally "
    "node.ae_title/host/port (the intake gets a new listener)",
    examples=[{"peers": [{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}]}],
)


@router.get("/config", tags=["config"])
def read_config(services: Services, _admin: Admin) -> dict[str, Any]:
    """The reloadable sections in force (secrets masked) and the node's listener."""
    node = services.config.node
    return {
        "reloadable": list(reloadable_sections()),
        "sections": reloadable_view(services.config),
        "node": {name: getattr(node, name) for name in LISTENER_FIELDS},
        "saved_to": None if services.config_path is None else str(services.config_path),
    }


@router.put("/config", tags=["config"])
def save_config(services: Services, admin: Admin, changes: dict[str, Any] = _CHANGES) -> dict[str, Any]:
    """Validate, save (atomically, previous file kept as ``.bak``), audit and apply without a restart."""
    return services.change_config(changes, admin).as_dict()


@router.post("/config/validate", tags=["config"])
def validate_config(services: Services, _admin: Admin, changes: dict[str, Any] = _CHANGES) -> dict[str, Any]:
    """Check a change and say what it would change, without saving it."""
    return {"valid": True, **services.change_config(changes, _admin, dry_run=True).as_dict()}
