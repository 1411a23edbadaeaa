"""Roles on API tokens: ``operator`` (review) or ``admin`` (everything); existing tokens stay operators.

Revision ID: 0005_token_roles
Revises: 0004_guarded_learning
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_token_roles"
down_revision = "0004_guarded_learning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="operator"))


def downgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("role")
