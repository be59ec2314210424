"""Projection tables of the pathway: domain state derived from the FHIR resources.

They are written in the same transaction as the resources they derive from, and can be
rebuilt from those resources' history at any time (``waymark rebuild-projections``). Audit
queries read these, never the JSON.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
)

from app.fhir.models import Base

#: One row per referral (ServiceRequest + its Task): where it stands now.
referral = Table(
    "referral",
    Base.metadata,
    Column("service_request_id", Text, nullable=False),
    Column("task_id", Text, nullable=False, unique=True),
    Column("patient_id", Text, nullable=False),
    Column("from_service_id", Text, nullable=False),
    Column("to_service_id", Text, nullable=False),
    Column("from_kind", Text, nullable=False),
    Column("to_kind", Text, nullable=False),
    Column("code", Text, nullable=True),  # the ServiceRequest's code: system|code
    Column("liberation_date", Date, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),  # Task.status
    Column("business_status", Text, nullable=True),
    Column("open", Boolean, nullable=False),
    PrimaryKeyConstraint("service_request_id"),
    Index(None, "patient_id", "to_service_id", "open"),
    Index(None, "to_service_id", "status"),
)

#: Every change of a referral Task's status or business state, in order.
referral_event = Table(
    "referral_event",
    Base.metadata,
    Column("task_id", Text, nullable=False),
    Column("version_id", Integer, nullable=False),  # the Task version that made the change
    Column("service_request_id", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_status", Text, nullable=True),
    Column("to_status", Text, nullable=False),
    Column("business_status", Text, nullable=True),
    Column("reason_code", Text, nullable=True),  # Task.statusReason: system|code
    Column("reason_text", Text, nullable=True),
    Column("pauses_clock", Boolean, nullable=False),
    Column("who", Text, nullable=True),  # the client that wrote the version (meta.source)
    PrimaryKeyConstraint("task_id", "version_id"),
    Index(None, "service_request_id"),
)

#: Every gate decision on a referral, in order: the evaluation when it was made (seq 0), then
#: each re-evaluation that changed the outcome or mode of a hold, each release (by evidence or a
#: change of mode), override and closure. ``current`` marks the latest row of each (referral,
#: gate), which says where the gate stands now: the current-state queries read only those.
#: Rows are never changed, apart from ``current``; they are rebuilt from the referral's
#: ServiceRequest (its gate-evaluation extensions) and its DetectedIssues' gate-decision log.
gate_decision = Table(
    "gate_decision",
    Base.metadata,
    Column("service_request_id", Text, nullable=False),
    Column("gate_id", Text, nullable=False),  # the gate's PlanDefinition id
    Column("seq", Integer, nullable=False),  # 0: the evaluation at referral; then 1, 2, ...
    Column("task_id", Text, nullable=False),
    Column("patient_id", Text, nullable=False),
    Column("gate_code", Text, nullable=False),
    Column("gate_kind", Text, nullable=False),
    Column("action", Text, nullable=False),  # evaluated|held|reevaluated|released|overridden|closed
    Column("mode", Text, nullable=False),  # as it was at this decision
    Column("outcome", Text, nullable=False),  # met | not-met | unknown, at this decision
    Column("at", DateTime(timezone=True), nullable=False),
    Column("held", Boolean, nullable=False),  # the gate holds the referral after this row
    Column("released_at", DateTime(timezone=True), nullable=True),  # released|overridden rows
    Column("released_by", Text, nullable=True),  # evidence | mode | override
    Column("who", Text, nullable=True),  # the client that overrode (its URI)
    Column("reason", Text, nullable=True),  # an override's reason
    Column("detected_issue_id", Text, nullable=True),
    Column("current", Boolean, nullable=False),
    PrimaryKeyConstraint("service_request_id", "gate_id", "seq"),
    Index(None, "current", "held", "service_request_id"),
    Index(None, "patient_id", "current", "held"),
)

#: Every change of a phase's status on a person's pathway CarePlan, in order.
phase_event = Table(
    "phase_event",
    Base.metadata,
    Column("care_plan_id", Text, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("phase", Text, nullable=False),  # pathway-phase code
    Column("patient_id", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_status", Text, nullable=True),
    Column("to_status", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("who", Text, nullable=True),
    PrimaryKeyConstraint("care_plan_id", "version_id", "phase"),
    Index(None, "patient_id"),
)
