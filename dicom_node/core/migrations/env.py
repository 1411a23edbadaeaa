"""Alembic environment of the node's index: run by :func:`dicom_node.core.db.migrate` on an open connection."""

from __future__ import annotations

from alembic import context

from dicom_node.core.db import Base
from dicom_node.core.engine import import_table_modules

import_table_modules()
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
