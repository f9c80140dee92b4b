"""Versions in production: traffic policies with history, version policies, rollouts, feedback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "traffic_policies",
        sa.Column("model_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("policy", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_traffic_policies_model_id_models"),
        sa.PrimaryKeyConstraint("model_id", name="pk_traffic_policies"),
    )
    op.create_table(
        "traffic_policy_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("old_policy", sa.Text(), nullable=True),
        sa.Column("new_policy", sa.Text(), nullable=True),
        sa.Column("changed_by", sa.String(length=255), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_traffic_policy_history_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_traffic_policy_history"),
    )
    op.create_index("ix_traffic_policy_history_model_id", "traffic_policy_history", ["model_id"])
    op.create_table(
        "version_policies",
        sa.Column("model_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_version_policies_model_id_models"),
        sa.PrimaryKeyConstraint("model_id", name="pk_version_policies"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=False),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("guards", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_rollouts_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_index("ix_rollouts_model_id", "rollouts", ["model_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_feedback_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_model_id_request_id", "feedback", ["model_id", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_model_id_request_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_rollouts_model_id", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("version_policies")
    op.drop_index("ix_traffic_policy_history_model_id", table_name="traffic_policy_history")
    op.drop_table("traffic_policy_history")
    op.drop_table("traffic_policies")
