"""SMART Backend Services: client registry and assertion replay log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 12:00:00.000000
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
        "auth_client",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("allowed_scopes", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_auth_client")),
    )
    op.create_table(
        "auth_jti",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["auth_client.client_id"],
            name=op.f("fk_auth_jti_client_id_auth_client"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_auth_jti")),
    )
    with op.batch_alter_table("auth_jti", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_jti_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_jti", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_jti_expires_at"))

    op.drop_table("auth_jti")
    op.drop_table("auth_client")
