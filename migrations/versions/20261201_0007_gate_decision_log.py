"""Gate decisions as a log: every evaluation, hold, release, override and closure a row

The table kept one row per (referral, gate), overwritten by each release. Now each decision is
a row (seq 0 the evaluation when the referral was made, then 1, 2, ...), with ``current``
marking the latest of each (referral, gate). Existing rows are carried over: each becomes its
evaluation, and a released one gains the row of its release.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_INDEXES = ("ix_gate_decision_patient_id_held_released_at", "ix_gate_decision_held_released_at")
_NEW_INDEXES = {
    "ix_gate_decision_current_held_service_request_id": ["current", "held", "service_request_id"],
    "ix_gate_decision_patient_id_current_held": ["patient_id", "current", "held"],
}


def _log_table() -> sa.Table:
    return sa.Table(
        "gate_decision",
        sa.MetaData(),
        sa.Column("service_request_id", sa.Text(), nullable=False),
        sa.Column("gate_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("gate_code", sa.Text(), nullable=False),
        sa.Column("gate_kind", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.Text(), nullable=True),
        sa.Column("who", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detected_issue_id", sa.Text(), nullable=True),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("service_request_id", "gate_id", "seq", name="pk_gate_decision"),
    )


def _one_row_table() -> sa.Table:
    return sa.Table(
        "gate_decision",
        sa.MetaData(),
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
        sa.PrimaryKeyConstraint("service_request_id", "gate_id", name="pk_gate_decision"),
    )


def _as_log(row: Any) -> list[dict[str, Any]]:
    first = {
        "service_request_id": row.service_request_id,
        "gate_id": row.gate_id,
        "seq": 0,
        "task_id": row.task_id,
        "patient_id": row.patient_id,
        "gate_code": row.gate_code,
        "gate_kind": row.gate_kind,
        "action": "held" if row.held else "evaluated",
        "mode": row.mode,
        "outcome": row.outcome,
        "at": row.evaluated_at,
        "held": row.held,
        "released_at": None,
        "released_by": None,
        "who": None,
        "reason": None,
        "detected_issue_id": row.detected_issue_id,
        "current": row.released_at is None,
    }
    if row.released_at is None:
        return [first]
    release = {
        **first,
        "seq": 1,
        "action": "overridden" if row.released_by == "override" else "released",
        "at": row.released_at,
        "held": False,
        "released_at": row.released_at,
        "released_by": row.released_by,
        "current": True,
    }
    return [first, release]


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_one_row_table())).all()
    for name in _OLD_INDEXES:
        op.drop_index(name, table_name="gate_decision")
    op.drop_table("gate_decision")
    log = _log_table()
    log.create(bind)
    for name, columns in _NEW_INDEXES.items():
        op.create_index(name, "gate_decision", columns)
    converted = [values for row in rows for values in _as_log(row)]
    if converted:
        bind.execute(sa.insert(log), converted)


def downgrade() -> None:
    bind = op.get_bind()
    log = _log_table()
    rows = bind.execute(sa.select(log).order_by(log.c.service_request_id, log.c.seq)).all()
    for name in _NEW_INDEXES:
        op.drop_index(name, table_name="gate_decision")
    op.drop_table("gate_decision")
    one_row = _one_row_table()
    one_row.create(bind)
    op.create_index(_OLD_INDEXES[0], "gate_decision", ["patient_id", "held", "released_at"])
    op.create_index(_OLD_INDEXES[1], "gate_decision", ["held", "released_at"])
    collapsed: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row.service_request_id, row.gate_id)
        kept = collapsed.setdefault(
            key,
            {
                "service_request_id": row.service_request_id,
                "gate_id": row.gate_id,
                "task_id": row.task_id,
                "patient_id": row.patient_id,
                "gate_code": row.gate_code,
                "gate_kind": row.gate_kind,
                "mode": row.mode,
                "outcome": row.outcome,
                "evaluated_at": row.at,
                "held": row.held,
                "released_at": None,
                "released_by": None,
                "detected_issue_id": row.detected_issue_id,
            },
        )
        if row.released_at is not None:
            kept.update(released_at=row.released_at, released_by=row.released_by)
    if collapsed:
        bind.execute(sa.insert(one_row), list(collapsed.values()))
