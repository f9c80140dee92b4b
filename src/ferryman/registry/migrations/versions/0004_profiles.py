"""Reference profiles per version (monitoring: drift and data quality).

Revision ID: 0004
Revises: 0003
Create Date: 2026-03-15 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "version_profiles",
        sa.Column("model_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_version_profiles_model_id_models"),
        sa.PrimaryKeyConstraint("model_id", "version", name="pk_version_profiles"),
    )


def downgrade() -> None:
    op.drop_table("version_profiles")
