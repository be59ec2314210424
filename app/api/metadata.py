"""GET /metadata: the CapabilityStatement."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.edge import FORMAT
from app.fhir.http import negotiate

router = APIRouter(tags=["FHIR REST"])


@router.get(
    "/metadata",
    name="capabilities",
    summary="The CapabilityStatement: what this server implements",
    responses={200: {"content": {"application/fhir+json": {}}}},
    openapi_extra={"parameters": [FORMAT]},
)
async def metadata(request: Request) -> Response:
    media = negotiate(request.headers.get("accept"), request.query_params.get("_format"))
    return Response(request.app.state.capability_statement, media_type=media)
