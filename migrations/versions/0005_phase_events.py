"""Phase events: every change of a phase on a person's pathway CarePlan

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "phase_event",
        sa.Column("care_plan_id", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_status", sa.Text(), nullable=True),
        sa.Column("to_status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("who", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("care_plan_id", "version_id", "phase", name=op.f("pk_phase_event")),
    )
    op.create_index(op.f("ix_phase_event_patient_id"), "phase_event", ["patient_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_phase_event_patient_id"), table_name="phase_event")
    op.drop_table("phase_event")
