"""Rebuilding the pathway projections from the resources' history.

The live rules and the rebuild share one derivation (``workflow.timeline_event``), so a
rebuild gives the same rows the live writes made.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.store import FhirStore
from app.pathway.codes import (
    LIBERATION_DATE,
    REFERRAL_TASK,
    REFERRING_SERVICE,
    codes,
    reference_id,
)
from app.pathway.directory import service_from
from app.pathway.gate_records import GATE_EVALUATION, log_of
from app.pathway.gates import GATE_ID
from app.pathway.phase_rules import phase_events
from app.pathway.phases import is_pathway_plan
from app.pathway.referrals import clock_pausing_reasons, is_referral
from app.pathway.repository import GateRepository, PhaseRepository, ReferralRepository
from app.pathway.workflow import OPEN, timeline_event


async def rebuild(store: FhirStore) -> int:
    """Replace the referral projections with what the stored resources say; the number of
    referrals found."""
    repository = ReferralRepository(store.repo.conn)
    gate_repository = GateRepository(store.repo.conn)
    await gate_repository.clear()
    await repository.clear()
    await _rebuild_phase_events(store)
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
        await _rebuild_gate_decisions(
            store, gate_repository, request, task_id, patient_id, _at(first_request)
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


async def _rebuild_gate_decisions(
    store: FhirStore,
    repository: GateRepository,
    request: dict[str, Any],
    task_id: str,
    patient_id: str,
    evaluated_at: Any,
) -> None:
    """The gate decisions of one referral: its evaluations when it was made (kept on the
    ServiceRequest), then each later decision from the log of the gate's DetectedIssue."""
    issues = {
        code: issue
        for issue in await store.find(
            "DetectedIssue", [("implicated", f"ServiceRequest/{request['id']}")], count=100
        )
        for code in codes(issue.get("code", {}), GATE_ID)
    }
    referral = {"service_request_id": request["id"], "task_id": task_id, "patient_id": patient_id}
    rows = _evaluation_rows(request, referral, issues, evaluated_at)
    for code, issue in issues.items():
        gate_id = next(
            str(found)
            for ref in issue.get("implicated", [])
            if (found := reference_id(ref, "PlanDefinition")) is not None
        )
        for seq, entry in enumerate(log_of(issue), start=1):
            rows.setdefault(gate_id, []).append(
                _logged_row(referral, gate_id, code, seq, entry, issue["id"])
            )
    for decisions in rows.values():
        for position, values in enumerate(decisions):
            await repository.add(**values, current=position == len(decisions) - 1)


def _evaluation_rows(
    request: dict[str, Any], referral: dict[str, str], issues: dict[str, Any], at: Any
) -> dict[str, list[dict[str, Any]]]:
    """The first row of each gate: its evaluation when the referral was made."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for extension in request.get("extension", []):
        if extension.get("url") != GATE_EVALUATION:
            continue
        parts = _parts(extension)
        gate_id = str(reference_id(parts["gate"], "PlanDefinition"))
        acts = parts["mode"] in ("enforced", "advisory") and parts["outcome"] != "met"
        holding = parts["mode"] == "enforced" and parts["outcome"] != "met"
        issue = issues.get(parts["code"]) if acts else None
        rows[gate_id] = [
            {
                **referral,
                "gate_id": gate_id,
                "seq": 0,
                "gate_code": parts["code"],
                "gate_kind": parts["kind"],
                "action": "held" if holding else "evaluated",
                "mode": parts["mode"],
                "outcome": parts["outcome"],
                "at": at,
                "held": holding,
                "released_at": None,
                "released_by": None,
                "who": None,
                "reason": None,
                "detected_issue_id": issue["id"] if issue else None,
            }
        ]
    return rows


def _parts(extension: dict[str, Any]) -> dict[str, Any]:
    return {
        p["url"]: next(v for k, v in p.items() if k.startswith("value"))
        for p in extension.get("extension", [])
    }


def _logged_row(
    referral: dict[str, str], gate_id: str, code: str, seq: int, entry: dict[str, Any], issue: str
) -> dict[str, Any]:
    at = _at({"meta": {"lastUpdated": entry["at"]}})
    released = entry["action"] in ("released", "overridden")
    return {
        **referral,
        "gate_id": gate_id,
        "seq": seq,
        "gate_code": code,
        "gate_kind": entry["kind"],
        "action": entry["action"],
        "mode": entry["mode"],
        "outcome": entry["outcome"],
        "at": at,
        "held": entry["held"],
        "released_at": at if released else None,
        "released_by": entry.get("releasedBy"),
        "who": entry.get("who"),
        "reason": entry.get("reason"),
        "detected_issue_id": issue,
    }


async def _rebuild_phase_events(store: FhirStore) -> None:
    repository = PhaseRepository(store.repo.conn)
    await repository.clear()
    for plan in await _all(store, "CarePlan"):
        if not is_pathway_plan(plan):
            continue
        before: dict[str, Any] | None = None
        for version in await _versions(store, "CarePlan", plan["id"]):
            for values in phase_events(before, version):
                await repository.add(**values)
            before = version
