"""All SQL on the pathway projections (the caller's transaction; nothing here commits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.fhir.repository import as_utc
from app.pathway.models import gate_decision, phase_event, referral, referral_event


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    task_id: str
    version_id: int
    service_request_id: str
    at: datetime
    from_status: str | None
    to_status: str
    business_status: str | None
    reason_code: str | None
    reason_text: str | None
    pauses_clock: bool
    who: str | None


class ReferralRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        service_request_id: str,
        task_id: str,
        patient_id: str,
        from_service_id: str,
        to_service_id: str,
        from_kind: str,
        to_kind: str,
        code: str | None,
        liberation_date: date | None,
        created_at: datetime,
    ) -> None:
        await self.conn.execute(
            insert(referral).values(
                service_request_id=service_request_id,
                task_id=task_id,
                patient_id=patient_id,
                from_service_id=from_service_id,
                to_service_id=to_service_id,
                from_kind=from_kind,
                to_kind=to_kind,
                code=code,
                liberation_date=liberation_date,
                created_at=created_at,
                status="requested",
                business_status=None,
                open=True,
            )
        )

    async def by_task(self, task_id: str) -> Row[Any] | None:
        return (
            await self.conn.execute(select(referral).where(referral.c.task_id == task_id))
        ).first()

    async def by_service_request(self, service_request_id: str) -> Row[Any] | None:
        query = select(referral).where(referral.c.service_request_id == service_request_id)
        return (await self.conn.execute(query)).first()

    async def of_patient(self, patient_id: str) -> Sequence[Row[Any]]:
        query = (
            select(referral)
            .where(referral.c.patient_id == patient_id)
            .order_by(referral.c.created_at, referral.c.service_request_id)
        )
        return (await self.conn.execute(query)).all()

    async def open_referral(self, *, patient_id: str, to_service_id: str) -> str | None:
        """The ServiceRequest id of the patient's open referral to that service, if any."""
        query = select(referral.c.service_request_id).where(
            referral.c.patient_id == patient_id,
            referral.c.to_service_id == to_service_id,
            referral.c.open.is_(True),
        )
        return (await self.conn.execute(query.limit(1))).scalar_one_or_none()

    async def set_state(
        self, task_id: str, *, status: str, business_status: str | None, is_open: bool
    ) -> None:
        await self.conn.execute(
            update(referral)
            .where(referral.c.task_id == task_id)
            .values(status=status, business_status=business_status, open=is_open)
        )

    async def add_event(self, **values: Any) -> None:
        await self.conn.execute(insert(referral_event).values(**values))

    async def events(self, task_id: str) -> list[TimelineEvent]:
        query = (
            select(referral_event)
            .where(referral_event.c.task_id == task_id)
            .order_by(referral_event.c.version_id)
        )
        rows = (await self.conn.execute(query)).mappings().all()
        return [TimelineEvent(**{**row, "at": as_utc(row["at"])}) for row in rows]

    async def all_referrals(self) -> Sequence[Row[Any]]:
        return (
            await self.conn.execute(select(referral).order_by(referral.c.service_request_id))
        ).all()

    async def all_events(self) -> Sequence[Row[Any]]:
        query = select(referral_event).order_by(
            referral_event.c.task_id, referral_event.c.version_id
        )
        return (await self.conn.execute(query)).all()

    async def clear(self) -> None:
        await self.conn.execute(delete(referral_event))
        await self.conn.execute(delete(referral))


class GateRepository:
    """All SQL on gate decisions: an append-only log, whose ``current`` rows say where each
    (referral, gate) stands now."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, **values: Any) -> None:
        """A row as it stands (the rebuild, which knows ``seq`` and ``current``)."""
        await self.conn.execute(insert(gate_decision).values(**values))

    async def append(self, previous: Row[Any] | None, **values: Any) -> None:
        """The next decision on a (referral, gate), after ``previous`` (its current row,
        None for the first one after the referral was made): it becomes the current row."""
        seq = 1 if previous is None else previous.seq + 1
        if previous is not None:
            await self.conn.execute(
                update(gate_decision)
                .where(
                    gate_decision.c.service_request_id == previous.service_request_id,
                    gate_decision.c.gate_id == previous.gate_id,
                    gate_decision.c.current.is_(True),
                )
                .values(current=False)
            )
        await self.add(**values, seq=seq, current=True)

    async def held_referrals_of(self, patient_id: str) -> list[str]:
        """The patient's referrals still held by a gate."""
        query = (
            select(gate_decision.c.service_request_id)
            .where(
                gate_decision.c.patient_id == patient_id,
                gate_decision.c.current.is_(True),
                gate_decision.c.held.is_(True),
            )
            .distinct()
        )
        return list((await self.conn.execute(query)).scalars())

    async def held_referrals(self, *, after: str, limit: int) -> list[str]:
        """A batch of held referrals, in id order after ``after`` (for re-evaluation)."""
        query = (
            select(gate_decision.c.service_request_id)
            .where(
                gate_decision.c.current.is_(True),
                gate_decision.c.held.is_(True),
                gate_decision.c.service_request_id > after,
            )
            .distinct()
            .order_by(gate_decision.c.service_request_id)
            .limit(limit)
        )
        return list((await self.conn.execute(query)).scalars())

    async def held(
        self, service_request_id: str, *, skip_locked: bool = False
    ) -> Sequence[Row[Any]]:
        """The current rows of the gates holding the referral, locked until the transaction
        ends (PostgreSQL), so that two re-evaluations release a referral once; a waiting one
        then finds the rows no longer current. ``skip_locked`` passes over a referral
        another worker holds."""
        query = select(gate_decision).where(
            gate_decision.c.service_request_id == service_request_id,
            gate_decision.c.current.is_(True),
            gate_decision.c.held.is_(True),
        )
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=skip_locked)
        return (await self.conn.execute(query.order_by(gate_decision.c.gate_id))).all()

    async def current_of_referral(self, service_request_id: str) -> Sequence[Row[Any]]:
        """Where each gate evaluated on the referral stands now."""
        query = select(gate_decision).where(
            gate_decision.c.service_request_id == service_request_id,
            gate_decision.c.current.is_(True),
        )
        return (await self.conn.execute(query.order_by(gate_decision.c.gate_id))).all()

    async def current_of_patient(self, patient_id: str) -> Sequence[Row[Any]]:
        query = (
            select(gate_decision)
            .where(gate_decision.c.patient_id == patient_id, gate_decision.c.current.is_(True))
            .order_by(
                gate_decision.c.at, gate_decision.c.service_request_id, gate_decision.c.gate_id
            )
        )
        return (await self.conn.execute(query)).all()

    async def of_referral(self, service_request_id: str) -> Sequence[Row[Any]]:
        """Every decision on the referral, in order."""
        query = (
            select(gate_decision)
            .where(gate_decision.c.service_request_id == service_request_id)
            .order_by(gate_decision.c.gate_id, gate_decision.c.seq)
        )
        return (await self.conn.execute(query)).all()

    async def all(self) -> Sequence[Row[Any]]:
        query = select(gate_decision).order_by(
            gate_decision.c.service_request_id, gate_decision.c.gate_id, gate_decision.c.seq
        )
        return (await self.conn.execute(query)).all()

    async def clear(self) -> None:
        await self.conn.execute(delete(gate_decision))


class PhaseRepository:
    """All SQL on phase events."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, **values: Any) -> None:
        await self.conn.execute(insert(phase_event).values(**values))

    async def of_patient(self, patient_id: str) -> Sequence[Row[Any]]:
        query = (
            select(phase_event)
            .where(phase_event.c.patient_id == patient_id)
            .order_by(phase_event.c.at, phase_event.c.version_id, phase_event.c.phase)
        )
        return (await self.conn.execute(query)).all()

    async def all(self) -> Sequence[Row[Any]]:
        query = select(phase_event).order_by(
            phase_event.c.care_plan_id, phase_event.c.version_id, phase_event.c.phase
        )
        return (await self.conn.execute(query)).all()

    async def clear(self) -> None:
        await self.conn.execute(delete(phase_event))
