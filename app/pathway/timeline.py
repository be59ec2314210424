"""A referral's timeline and waiting clock, as a FHIR Parameters resource ($timeline)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.fhir.errors import NotFound
from app.fhir.resources import instant
from app.fhir.store import FhirStore
from app.pathway.clocks import waiting_clock
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
    clock = waiting_clock(events, now)
    parameters: list[dict[str, Any]] = [
        {
            "name": "referral",
            "valueReference": {"reference": f"ServiceRequest/{row.service_request_id}"},
        },
        {"name": "task", "valueReference": {"reference": f"Task/{row.task_id}"}},
        {"name": "status", "valueCode": row.status},
        {"name": "open", "valueBoolean": row.open},
    ]
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
    clock_parts: list[dict[str, Any]] = [
        {"name": "waitedDays", "valueDecimal": _days(clock.waited)},
        {"name": "pausedDays", "valueDecimal": _days(clock.paused)},
        {"name": "waitedWithoutPausesDays", "valueDecimal": _days(clock.waited_without_pauses)},
        {
            "name": "stillWaiting",
            "valueBoolean": clock.started is not None and clock.stopped is None,
        },
    ]
    if clock.started is not None:
        clock_parts.insert(0, {"name": "started", "valueDateTime": instant(clock.started)})
    if clock.stopped is not None:
        clock_parts.insert(1, {"name": "stopped", "valueDateTime": instant(clock.stopped)})
    parameters.append({"name": "clock", "part": clock_parts})
    return {"resourceType": "Parameters", "parameter": parameters}


def _days(span: timedelta) -> float:
    return round(span.total_seconds() / 86400, 2)
