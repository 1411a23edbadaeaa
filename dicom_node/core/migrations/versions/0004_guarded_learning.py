"""Guarded learning: each revision's verdict on the reference set, and the site's kept cases.

Revision ID: 0004_guarded_learning
Revises: 0003_job_leases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_guarded_learning"
down_revision = "0003_job_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_revision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verdict", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("verdict_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reference_dice", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("active_reference_dice", sa.Float(), nullable=True))

    op.create_table(
        "site_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("source_key", sa.String(length=255), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("n_slices", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "source_key", name="uq_site_case_model_source_key"),
    )
    with op.batch_alter_table("site_case", schema=None) as batch_op:
        batch_op.create_index("ix_site_case_model_role", ["model", "role"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("site_case", schema=None) as batch_op:
        batch_op.drop_index("ix_site_case_model_role")
    op.drop_table("site_case")
    with op.batch_alter_table("model_revision", schema=None) as batch_op:
        batch_op.drop_column("active_reference_dice")
        batch_op.drop_column("reference_dice")
        batch_op.drop_column("verdict_reason")
        batch_op.drop_column("verdict")
