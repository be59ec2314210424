"""Revoking a client's access tokens: the moment its tokens were last revoked

Disabling a client revokes every access token issued to it until then; enabling it again does
not bring those tokens back. (Removing a client deletes its row; a client registered later
under the same name is newer than every token of the old one.) The lock timeout is set for
every migration in migrations/env.py.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_client") as batch:
        batch.add_column(sa.Column("tokens_revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_client") as batch:
        batch.drop_column("tokens_revoked_at")
