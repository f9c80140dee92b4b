"""Artifact signatures: ``versions.artifact_signature`` (``ed25519:<key id>:<base64>``, NULL = unsigned).

The existing ``versions.signature`` column is the tensor signature (inputs/outputs), so the
cryptographic signature gets a column of its own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("versions", sa.Column("artifact_signature", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("artifact_signature")
