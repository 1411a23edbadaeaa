"""Restart-safe state: revision idempotency keys, the learning lease, approval records, late arrivals, amendments.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_revision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_key", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_model_revision_source_key", ["name", "source_key"], unique=True)

    with op.batch_alter_table("model_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_job_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_instance_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("changed_since_draft", sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table("series_result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("corrected_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("approved_labels_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("approved_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("approved_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("drafted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("draft_slices", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("superseded_seg_path", sa.Text(), nullable=True))

    # 0.1 seeded one zoo revision per model; it records the zoo as its source
    op.execute("UPDATE model_revision SET source_key = 'zoo' WHERE source = 'zoo'")


def downgrade() -> None:
    with op.batch_alter_table("series_result", schema=None) as batch_op:
        batch_op.drop_column("superseded_seg_path")
        batch_op.drop_column("draft_slices")
        batch_op.drop_column("drafted_at")
        batch_op.drop_column("approved_at")
        batch_op.drop_column("approved_by")
        batch_op.drop_column("approved_labels_path")
        batch_op.drop_column("corrected_by")

    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("changed_since_draft")
        batch_op.drop_column("last_instance_at")

    with op.batch_alter_table("model_state", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_job_id")

    with op.batch_alter_table("model_revision", schema=None) as batch_op:
        batch_op.drop_index("ix_model_revision_source_key")
        batch_op.drop_column("source_key")
