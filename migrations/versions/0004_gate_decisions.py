"""Gate decisions: every gate evaluated on a referral, held, released or overridden

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 14:00:00.000000
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
        "gate_decision",
        sa.Column("service_request_id", sa.Text(), nullable=False),
        sa.Column("gate_id", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("gate_code", sa.Text(), nullable=False),
        sa.Column("gate_kind", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.Text(), nullable=True),
        sa.Column("detected_issue_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("service_request_id", "gate_id", name=op.f("pk_gate_decision")),
    )
    op.create_index(
        op.f("ix_gate_decision_patient_id_held_released_at"),
        "gate_decision",
        ["patient_id", "held", "released_at"],
    )
    op.create_index(
        op.f("ix_gate_decision_held_released_at"), "gate_decision", ["held", "released_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_gate_decision_held_released_at"), table_name="gate_decision")
    op.drop_index(op.f("ix_gate_decision_patient_id_held_released_at"), table_name="gate_decision")
    op.drop_table("gate_decision")
