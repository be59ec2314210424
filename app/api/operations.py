"""FHIR operations of the pathway: thin handlers that authorise and delegate to app/pathway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api import edge
from app.api.access import audited_store

router = APIRouter(tags=["Pathway operations"])

#: app.pathway.gate_operations.override_gate and override_phase_gate.
Override = Callable[..., Awaitable[dict[str, Any]]]

_PARAMETERS = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"const": "Parameters"}},
}


@router.get(
    "/ServiceRequest/{resource_id}/$timeline",
    name="referral-timeline",
    summary="A referral's timeline (every change of its Task) and its waiting clock",
    description=(
        "Answers a Parameters resource: `referral`, `task`, `status`, `open`, `liberationDate` "
        "(throughcare), one `event` per change of the Task's status or business state (`at`, "
        "`from`, `to`, `businessStatus`, `reason`, `pausesClock`, `who`), and `clock` "
        "(`referred`; `started`: the service has the referral; `stopped`: first treatment or "
        "closure without it, `endedBy` saying which; `waitedDays`, `pausedDays` on hold for "
        "reasons the person owns, `waitedWithoutPausesDays`, `daysSinceReferral` from the "
        "referral itself, `daysHeldByGates`, `stillWaiting`). Needs read access to "
        "ServiceRequest and Task. Defined by OperationDefinition/referral-timeline."
    ),
    responses=edge.responses({200: "The timeline, as Parameters"}, _PARAMETERS),
)
async def referral_timeline(
    request: Request,
    resource_id: Annotated[str, Path(description="The referral's ServiceRequest id")],
) -> Response:
    from app.pathway.timeline import referral_timeline as timeline

    media = edge.media(request)
    runtime = edge.runtime(request)
    async with audited_store(request, write=False) as store:
        body = await timeline(store, resource_id, now=runtime.clock())
    return Response(orjson.dumps(body), media_type=media)


@router.post(
    "/ServiceRequest/{resource_id}/$evaluate-gates",
    name="evaluate-gates",
    summary="Evaluate the gates acting on a referral, changing nothing",
    description=(
        "Answers a Parameters resource with one `gate` part per gate acting on the referral's "
        "receiving service: `gate` (the PlanDefinition), `code`, `title`, `kind`, `mode` (as it "
        "is now), `outcome` (met, not-met, unknown), `evidence` (references used), `metOn` "
        "(the date it would be met if nothing changes), `needed` (the evidence missing), "
        "`detail`. Needs read access to ServiceRequest. Decided from the token's scopes before "
        "anything is read: without read access to PlanDefinition no gate is named; a gate's "
        "`outcome`, `evidence`, `detail`, `metOn` and `needed` need read access to every type "
        "its evaluation reads (Observation; MedicationStatement and MedicationRequest when "
        "opioid substitution counts; CarePlan for the phase gate), and are otherwise left out "
        "with an `omitted` part saying so; `omitted` at the top names each type left out. "
        "Defined by OperationDefinition/evaluate-gates."
    ),
    responses=edge.responses({200: "The evaluation, as Parameters"}, _PARAMETERS),
)
async def evaluate_gates(
    request: Request,
    resource_id: Annotated[str, Path(description="The referral's ServiceRequest id")],
) -> Response:
    from app.pathway.gate_operations import evaluate_referral_gates

    media = edge.media(request)
    async with audited_store(request, write=False) as store:
        body = await evaluate_referral_gates(store, resource_id)
    return Response(orjson.dumps(body), media_type=media)


@router.get(
    "/HealthcareService/{resource_id}/$gates",
    name="service-gates",
    summary="The gates acting on a service, so a referrer can see them before referring",
    description=(
        "Answers a Bundle (collection) of the active gate PlanDefinitions guarding the service, "
        "directly or by its service kind. Needs read access to HealthcareService and "
        "PlanDefinition. Defined by OperationDefinition/service-gates."
    ),
    responses=edge.responses({200: "A Bundle of PlanDefinitions"}, _PARAMETERS),
)
async def service_gates(
    request: Request,
    resource_id: Annotated[str, Path(description="The HealthcareService id")],
) -> Response:
    from app.pathway.gate_operations import gates_of_service

    media = edge.media(request)
    runtime = edge.runtime(request)
    async with audited_store(request, write=False) as store:
        body = await gates_of_service(store, resource_id, base_url=runtime.settings.base_url)
    return Response(orjson.dumps(body), media_type=media)


@router.post(
    "/Task/{resource_id}/$override-gate",
    name="override-gate",
    summary="Release a referral held by a gate, recording who, when and why",
    description=(
        "Body: a Parameters resource with `gate` (valueCode: the gate's code, as in the "
        "DetectedIssue's code) and `reason` (valueString). Needs the scope "
        "`waymark/gate.override` and system/Task.u. The DetectedIssue gets a mitigation naming "
        "the client, time and reason; when no other gate holds the referral its Task goes back "
        "to requested. The phase gate may also be overridden on trauma-focussed work it does "
        "not hold (referred while the gate was suspended, or before phase 1 was reopened), so "
        "that the Task may start. Defined by OperationDefinition/override-gate."
    ),
    responses=edge.responses({200: "What was released, as Parameters"}, _PARAMETERS, 422),
    openapi_extra=edge.request_body(_PARAMETERS),
)
async def override_gate(
    request: Request,
    resource_id: Annotated[str, Path(description="The held referral's Task id")],
) -> Response:
    from app.pathway.gate_operations import override_gate as override

    return await _override(request, resource_id, override)


@router.post(
    "/CarePlan/{resource_id}/$override-gate",
    name="override-gate",  # the OperationDefinition covers Task and CarePlan
    summary="Start phase 2 before phase 1 is complete, recording who, when and why",
    description=(
        "Body: a Parameters resource with `gate` (valueCode: the phase gate's code) and "
        "`reason` (valueString). Needs the scope `waymark/gate.override` and "
        "system/CarePlan.u. Records the override on a DetectedIssue (implicated: the CarePlan "
        "and the gate; mitigation: the client, time and reason) and puts the phase-2 activity "
        "in progress, with the `phase-gate-override` extension naming that DetectedIssue. "
        "Refused with 422 when phase 1 is complete (no override is needed) or phase 2 has "
        "started. Defined by OperationDefinition/override-gate."
    ),
    responses=edge.responses({200: "What was overridden, as Parameters"}, _PARAMETERS, 422),
    openapi_extra=edge.request_body(_PARAMETERS),
)
async def override_phase_gate(
    request: Request,
    resource_id: Annotated[str, Path(description="The person's pathway CarePlan id")],
) -> Response:
    from app.pathway.gate_operations import override_phase_gate as override

    return await _override(request, resource_id, override)


async def _override(request: Request, resource_id: str, override: Override) -> Response:
    """An override's edge, the same on a Task and on a CarePlan: the body, the caller's one
    write transaction, and the principal whose decision the override records."""
    media = edge.media(request)
    document = await edge.json_body(request)
    async with audited_store(request, write=True) as store:
        body = await override(store, resource_id, document, principal=request.state.audit.principal)
    return Response(orjson.dumps(body), media_type=media)


@router.get(
    "/Patient/{resource_id}/$pathway",
    name="pathway",
    summary="Where a person is on their pathway, in one call",
    description=(
        "Answers a Parameters resource: `patient`; `carePlan`, `currentPhase`, "
        "`currentPhaseStatus`, one `phase` per activity (code, status), `phase1Complete` and "
        "`phase1Missing`, one `phaseEvent` per change of a phase (phase, at, from, to, reason, "
        "who); `readinessReview` (the latest that stands: review, value, date); one "
        "`sharedCare` per shared-care episode (episode, practice, lastReview, reviewDue); one "
        "`referral` per open referral (referral, task, to, status, businessStatus, "
        "liberationDate, waitedDays, waitedWithoutPausesDays, daysSinceReferral, "
        "daysHeldByGates); one `closedReferral` per closed referral (referral, task, to, "
        "status, businessStatus, closed, reason, who, heldByGateWhenClosed, "
        "daysSinceReferral, daysHeldByGates); one `gate` per gate evaluated on them, as it "
        "stands now (referral, gate, kind, mode, outcome, holding, decision, releasedBy; the "
        "outcome only when the token may read the records the gate reads, else an `omitted` "
        "part); one `overdue` per item "
        "past due (kind `held-over-90-days`, `phase-1-without-review` or `shared-care-review`, "
        "item, since); and `omitted`, naming what the token may not read and so was left out. "
        "Defined by OperationDefinition/pathway."
    ),
    responses=edge.responses({200: "The pathway, as Parameters"}, _PARAMETERS),
)
async def pathway(
    request: Request,
    resource_id: Annotated[str, Path(description="The Patient id")],
) -> Response:
    from app.pathway.summary import pathway_summary

    media = edge.media(request)
    async with audited_store(request, write=False) as store:
        body = await pathway_summary(store, resource_id)
    return Response(orjson.dumps(body), media_type=media)
