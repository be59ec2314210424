"""FHIR operations of the pathway: thin handlers that authorise and delegate to app/pathway."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api import edge
from app.api.access import audited_store

router = APIRouter(tags=["Pathway operations"])

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
        "Answers a Parameters resource: `referral`, `task`, `status`, `open`, one `event` per "
        "change of the Task's status or business state (`at`, `from`, `to`, `businessStatus`, "
        "`reason`, `pausesClock`, `who`), and `clock` (`started`: the service has the "
        "referral; `stopped`: first treatment; `waitedDays`, `pausedDays` on hold for reasons "
        "the person owns, `waitedWithoutPausesDays`, `stillWaiting`). Needs read access to "
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
