"""Pathway projections: referrals and their timelines

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referral",
        sa.Column("service_request_id", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("from_service_id", sa.Text(), nullable=False),
        sa.Column("to_service_id", sa.Text(), nullable=False),
        sa.Column("from_kind", sa.Text(), nullable=False),
        sa.Column("to_kind", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("liberation_date", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("business_status", sa.Text(), nullable=True),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("service_request_id", name=op.f("pk_referral")),
        sa.UniqueConstraint("task_id", name=op.f("uq_referral_task_id")),
    )
    op.create_index(
        op.f("ix_referral_patient_id_to_service_id_open"),
        "referral",
        ["patient_id", "to_service_id", "open"],
    )
    op.create_index(
        op.f("ix_referral_to_service_id_status"), "referral", ["to_service_id", "status"]
    )
    op.create_table(
        "referral_event",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("service_request_id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_status", sa.Text(), nullable=True),
        sa.Column("to_status", sa.Text(), nullable=False),
        sa.Column("business_status", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.Text(), nullable=True),
        sa.Column("reason_text", sa.Text(), nullable=True),
        sa.Column("pauses_clock", sa.Boolean(), nullable=False),
        sa.Column("who", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "version_id", name=op.f("pk_referral_event")),
    )
    op.create_index(
        op.f("ix_referral_event_service_request_id"), "referral_event", ["service_request_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_referral_event_service_request_id"), table_name="referral_event")
    op.drop_table("referral_event")
    op.drop_index(op.f("ix_referral_to_service_id_status"), table_name="referral")
    op.drop_index(op.f("ix_referral_patient_id_to_service_id_open"), table_name="referral")
    op.drop_table("referral")
