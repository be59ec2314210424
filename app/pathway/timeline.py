"""A referral's timeline and waiting clock, as a FHIR Parameters resource ($timeline)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.fhir.errors import NotFound
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.clocks import Clock, waiting_clock
from app.pathway.codes import REFERRAL_STATE
from app.pathway.repository import ReferralRepository


async def referral_timeline(
    store: FhirStore, service_request_id: str, *, now: datetime
) -> dict[str, Any]:
    """The events of a referral and its waiting clock. The caller must be allowed to read
    the ServiceRequest and its Task (checked through the store)."""
    await store.read("ServiceRequest", service_request_id)
    repository = ReferralRepository(store.repo.conn)
    row = await repository.by_service_request(service_request_id)
    if row is None:
        raise NotFound(f"ServiceRequest/{service_request_id} is not a referral")
    await store.read("Task", row.task_id)
    events = await repository.events(row.task_id)
    parameters: list[dict[str, Any]] = [
        {
            "name": "referral",
            "valueReference": {"reference": f"ServiceRequest/{row.service_request_id}"},
        },
        {"name": "task", "valueReference": {"reference": f"Task/{row.task_id}"}},
        {"name": "status", "valueCode": row.status},
        {"name": "open", "valueBoolean": row.open},
    ]
    if row.liberation_date is not None:
        parameters.append({"name": "liberationDate", "valueDate": row.liberation_date.isoformat()})
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "at", "valueDateTime": instant(event.at)},
            {"name": "to", "valueCode": event.to_status},
            {"name": "pausesClock", "valueBoolean": event.pauses_clock},
        ]
        if event.from_status:
            parts.insert(1, {"name": "from", "valueCode": event.from_status})
        if event.business_status:
            parts.append(
                {
                    "name": "businessStatus",
                    "valueCoding": {"system": REFERRAL_STATE, "code": event.business_status},
                }
            )
        if event.reason_text or event.reason_code:
            parts.append({"name": "reason", "valueString": event.reason_text or event.reason_code})
        if event.who:
            parts.append({"name": "who", "valueUri": event.who})
        parameters.append({"name": "event", "part": parts})
    parameters.append({"name": "clock", "part": clock_parts(waiting_clock(events, now))})
    return {"resourceType": "Parameters", "parameter": parameters}


def clock_parts(clock: Clock) -> list[dict[str, Any]]:
    """A waiting clock as Parameters parts (shared with $pathway)."""
    parts: list[dict[str, Any]] = []
    for name, moment in (
        ("referred", clock.referred),
        ("started", clock.started),
        ("stopped", clock.stopped),
    ):
        if moment is not None:
            parts.append({"name": name, "valueDateTime": instant(moment)})
    if clock.ended_by is not None:
        parts.append({"name": "endedBy", "valueCode": clock.ended_by})
    parts += [
        {"name": "waitedDays", "valueDecimal": days(clock.waited)},
        {"name": "pausedDays", "valueDecimal": days(clock.paused)},
        {"name": "waitedWithoutPausesDays", "valueDecimal": days(clock.waited_without_pauses)},
        {"name": "daysSinceReferral", "valueDecimal": days(clock.since_referral)},
        {"name": "daysHeldByGates", "valueDecimal": days(clock.held_by_gates)},
        {"name": "stillWaiting", "valueBoolean": clock.still_waiting},
    ]
    return parts


def days(span: timedelta) -> float:
    return round(span.total_seconds() / 86400, 2)
