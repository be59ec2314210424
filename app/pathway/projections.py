"""Rebuilding the pathway projections from the resources' history.

The live rules and the rebuild share one derivation (``workflow.timeline_event``), so a
rebuild gives the same rows the live writes made.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.store import FhirStore
from app.pathway.codes import LIBERATION_DATE, REFERRAL_TASK, REFERRING_SERVICE, reference_id
from app.pathway.directory import service_from
from app.pathway.referrals import clock_pausing_reasons, is_referral
from app.pathway.repository import ReferralRepository
from app.pathway.workflow import OPEN, timeline_event


async def rebuild(store: FhirStore) -> int:
    """Replace the referral projections with what the stored resources say; the number of
    referrals found."""
    repository = ReferralRepository(store.repo.conn)
    await repository.clear()
    pausing = await clock_pausing_reasons(store)
    found = 0
    for request in await _all(store, "ServiceRequest"):
        task_id = _extension_reference(request, REFERRAL_TASK, "Task")
        from_id = _extension_reference(request, REFERRING_SERVICE, "HealthcareService")
        if not is_referral(request) or task_id is None or from_id is None:
            continue
        versions = await _versions(store, "Task", task_id)
        first_request = (await _versions(store, "ServiceRequest", request["id"]))[0]
        to_id = reference_id(request["performer"][0], "HealthcareService")
        from_service = await _service(store, from_id)
        to_service = await _service(store, to_id) if to_id else None
        patient_id = reference_id(request.get("subject"), "Patient")
        if not versions or from_service is None or to_service is None or patient_id is None:
            continue
        code = next(
            (
                f"{c.get('system', '')}|{c['code']}"
                for c in (request.get("code") or {}).get("coding", [])
                if "code" in c
            ),
            None,
        )
        await repository.add(
            service_request_id=request["id"],
            task_id=task_id,
            patient_id=patient_id,
            from_service_id=from_service.id,
            to_service_id=to_service.id,
            from_kind=from_service.kind,
            to_kind=to_service.kind,
            code=code,
            liberation_date=_liberation(request),
            created_at=_at(first_request),
        )
        before: dict[str, Any] | None = None
        business = None
        for version in versions:
            values = timeline_event(
                before,
                version,
                service_request_id=request["id"],
                clock_pausing_reasons=pausing,
            )
            if values is not None:
                await repository.add_event(**values)
                business = values["business_status"]
            before = version
        status = str(versions[-1]["status"])
        await repository.set_state(
            task_id, status=status, business_status=business, is_open=status in OPEN
        )
        found += 1
    return found


async def _all(store: FhirStore, resource_type: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(content)
        for content in await store.repo.all_current(resource_type)
        if content is not None
    ]


async def _versions(store: FhirStore, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
    """Every stored version, oldest first (deletions left out)."""
    return [
        orjson.loads(v.content)
        for v in await store.repo.versions(resource_type, resource_id)
        if v.content is not None
    ]


async def _service(store: FhirStore, service_id: str) -> Any:
    document = await store.current("HealthcareService", service_id)
    return service_from(document) if document else None


def _extension_reference(document: dict[str, Any], url: str, resource_type: str) -> str | None:
    for extension in document.get("extension", []):
        if extension.get("url") == url:
            return reference_id(extension.get("valueReference"), resource_type)
    return None


def _liberation(document: dict[str, Any]) -> Any:
    from datetime import date

    for extension in document.get("extension", []):
        if extension.get("url") == LIBERATION_DATE and isinstance(extension.get("valueDate"), str):
            return date.fromisoformat(extension["valueDate"])
    return None


def _at(document: dict[str, Any]) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(str(document["meta"]["lastUpdated"]).replace("Z", "+00:00"))
